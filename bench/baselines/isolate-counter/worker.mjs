// The article's isolate design, rebuilt for edgestate's benchmarks (not the article's code):
// a Worker that routes every request to one Durable Object, which holds the counter and
// persists it with its storage API. Durable Objects are single-threaded, so increments are
// serialized and none is lost, but every request goes to the object's home region.
export class Counter {
  constructor(state) {
    this.state = state;
    this.ready = state.blockConcurrencyWhile(async () => {
      this.value = (await state.storage.get("value")) ?? 0;
      this.lastUpdated = (await state.storage.get("lastUpdated")) ?? null;
    });
  }

  async fetch(request) {
    await this.ready;
    const url = new URL(request.url);
    if (url.pathname === "/increment" && request.method === "POST") {
      this.value += 1;
      this.lastUpdated = new Date().toISOString();
      await this.state.storage.put({ value: this.value, lastUpdated: this.lastUpdated });
      return Response.json({ value: this.value, region: "iad" });
    }
    if (url.pathname === "/read" && request.method === "GET") {
      return Response.json({ value: this.value, region: "iad", lastUpdated: this.lastUpdated });
    }
    if (url.pathname === "/health") return Response.json({ status: "healthy", region: "iad" });
    return Response.json({ error: "not found" }, { status: 404 });
  }
}

export default {
  async fetch(request, env) {
    const id = env.COUNTER.idFromName("global-counter");
    return env.COUNTER.get(id).fetch(request);
  },
};
