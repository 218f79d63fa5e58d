// A counter built the way the article's Fly.io Express service is built, for comparison only:
// the state is a JSON file that every request reads and rewrites (no lock, no fsync, no atomic
// rename), with the article's retry-and-back-off on failed reads and writes. Concurrent increments race (read-modify-write), which is what bench/ measures.
//
// With PEERS=region=http://host:port,... it is the article's VM design: every 100 ms it posts
// its whole counter to every other region's /replicate, and a region adopts a received counter
// when it was updated later than its own (last writer wins), so concurrent increments in two
// regions overwrite each other.
// Written for edgestate's benchmarks; not the article's code.
'use strict';
const express = require('express');
const fs = require('fs/promises');
const path = require('path');

const region = process.env.FLY_REGION || 'local';
const port = Number(process.env.PORT || 8080);
const file = path.join(process.env.DATA_DIR || '.', 'counter.json');

// As in the article: up to three attempts, waiting 100 ms, then 200 ms, after a failure (a
// read that meets a half-rewritten file fails to parse).
async function withRetries(fn, retries = 3) {
  for (let i = 0; i < retries; i++) {
    try {
      return await fn();
    } catch (err) {
      if (i === retries - 1) throw err;
      await new Promise((resolve) => setTimeout(resolve, 100 * (i + 1)));
    }
  }
}

async function load() {
  return withRetries(async () => JSON.parse(await fs.readFile(file, 'utf8')));
}

async function store(state) {
  return withRetries(() => fs.writeFile(file, JSON.stringify(state)));
}

const app = express();
app.use(express.json());

app.post('/increment', async (req, res) => {
  try {
    const state = await load();
    state.value += 1;
    state.lastUpdated = new Date().toISOString();
    await store(state);
    res.json({ value: state.value, region });
  } catch (err) {
    res.status(500).json({ error: err.message });
  }
});

app.get('/read', async (req, res) => {
  try {
    const state = await load();
    res.json({ value: state.value, region, lastUpdated: state.lastUpdated });
  } catch (err) {
    res.status(500).json({ error: err.message });
  }
});

app.post('/replicate', async (req, res) => {
  try {
    const incoming = req.body;
    if (typeof incoming?.value !== 'number') return res.status(400).json({ error: 'bad counter' });
    const state = await load();
    if (!state.lastUpdated || (incoming.lastUpdated && incoming.lastUpdated > state.lastUpdated)) {
      await store({ value: incoming.value, lastUpdated: incoming.lastUpdated });
    }
    res.json({ ok: true });
  } catch (err) {
    res.status(500).json({ error: err.message });
  }
});

const peers = (process.env.PEERS || '').split(',').filter(Boolean).map((p) => p.split('=')[1]);
const intervalMs = Number(process.env.REPLICATION_INTERVAL_MS || 100);
async function replicate() {
  try {
    const state = await load();
    await Promise.allSettled(peers.map((url) => fetch(`${url}/replicate`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(state),
      signal: AbortSignal.timeout(2000),
    })));
  } catch (err) {
    // A torn file or a dead peer: try again next round, as the article's loop does.
  }
  setTimeout(replicate, intervalMs);
}

app.get('/health', async (req, res) => {
  try {
    await fs.access(file);
    res.json({ status: 'healthy', region });
  } catch (err) {
    res.status(503).json({ status: 'unhealthy', error: err.message });
  }
});

(async () => {
  try {
    await fs.access(file);
  } catch {
    await store({ value: 0 });
  }
  app.listen(port, '127.0.0.1', () => console.log(`express counter listening on ${port}`));
  if (peers.length > 0) setTimeout(replicate, intervalMs);
})();
