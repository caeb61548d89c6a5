// Shared by graphile.mjs and bullmq.mjs: the workload's parameters, the priorities, the JSON line.
//
// The workload (issue 14): JOBS no-op jobs, added in bulk adds of BATCH by CLIENTS concurrent
// producers (cloro's `bench --scenario enqueue` also submits batches of 500 from 4 clients), each
// job with a priority drawn uniformly from 1..10 (10 = most urgent, as in cloro), then one worker
// in the library itself at CONCURRENCY drains them.

export const JOBS = intEnv("PEERS_JOBS", 50_000);
export const BATCH = intEnv("PEERS_BATCH", 500);
export const CLIENTS = intEnv("PEERS_CLIENTS", 4);
export const CONCURRENCY = intEnv("PEERS_CONCURRENCY", 50);
export const SEED = intEnv("PEERS_SEED", 14);

export function intEnv(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n)) throw new Error(`${name} must be an integer, not ${raw}`);
  return n;
}

// mulberry32: a small seeded generator, so every run (and every peer) draws the same priorities.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The cloro-style priority (1..10, 10 = most urgent) of each job, the same for every peer. */
export function priorities(n = JOBS, seed = SEED) {
  const next = rng(seed);
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = 1 + Math.floor(next() * 10);
  return out;
}

/** The batches of job indexes, [start, end), in submission order. */
export function batches(n = JOBS, size = BATCH) {
  const out = [];
  for (let s = 0; s < n; s += size) out.push([s, Math.min(n, s + size)]);
  return out;
}

/** Runs `submit(batch)` over all batches with `clients` concurrent producers; resolves when all are acknowledged. */
export async function produce(all, clients, submit) {
  let next = 0;
  const one = async () => {
    while (next < all.length) {
      const b = all[next++];
      await submit(b);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, clients) }, one));
}

export const now = () => performance.now();

export function report(peer, version, { jobs, enqueueMs, drainMs, settings }) {
  const line = {
    peer,
    version,
    jobs,
    enqueuePerSec: Math.round(jobs / (enqueueMs / 1000)),
    drainPerSec: Math.round(jobs / (drainMs / 1000)),
    enqueueMs: Math.round(enqueueMs),
    drainMs: Math.round(drainMs),
    settings,
  };
  process.stdout.write(JSON.stringify(line) + "\n");
}
