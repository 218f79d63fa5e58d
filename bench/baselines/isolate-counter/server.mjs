// Runs worker.mjs in Cloudflare's runtime (workerd, through Miniflare) on 127.0.0.1:PORT with
// the Durable Object persisted under DATA_DIR. Prints "ready" once it serves.
// Usage: node server.mjs PORT DATA_DIR
import { Miniflare } from "miniflare";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const [port, dataDirArg] = process.argv.slice(2);
const dataDir = path.resolve(dataDirArg);
// workerd refuses module paths that leave its starting directory ("..").
process.chdir(here);
const mf = new Miniflare({
  modules: true,
  scriptPath: path.join(here, "worker.mjs"),
  durableObjects: { COUNTER: "Counter" },
  durableObjectsPersist: dataDir,
  host: "127.0.0.1",
  port: Number(port),
  compatibilityDate: "2024-09-23",
});
await mf.ready;
console.log("ready");
const stop = async () => {
  await mf.dispose();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
