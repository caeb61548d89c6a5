// BullMQ under issue 14's workload (see README.md): Queue.addBulk of 500, then one Worker at
// concurrency 50 drains them. One JSON line on stdout.
//
// Keys live under a fresh prefix `cloro_peers_<pid>` on $PEERS_REDIS, deleted afterwards.
import { createRequire } from "node:module";
import { Queue, Worker } from "bullmq";
import IORedis from "ioredis";
import { JOBS, BATCH, CLIENTS, CONCURRENCY, priorities, batches, produce, now, report } from "./common.mjs";

const version = createRequire(import.meta.url)("bullmq/package.json").version;
const url = process.env.PEERS_REDIS || "redis://127.0.0.1:6379";
const prefix = `cloro_peers_${process.pid}`;
const name = "noop";
const removeOnComplete = process.env.PEERS_BULLMQ_REMOVE_ON_COMPLETE === "1";
const connection = { url, maxRetriesPerRequest: null };

const settings = {
  concurrency: CONCURRENCY,
  batch: BATCH,
  producers: CLIENTS,
  removeOnComplete,
  priority: "bullmq priority = 11 - p (1..10; lower runs first; 0 would mean unprioritized)",
  client: "ioredis",
};

async function cleanup() {
  const redis = new IORedis(url, { maxRetriesPerRequest: null });
  let cursor = "0";
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 1000);
    cursor = next;
    if (keys.length) await redis.unlink(...keys);
  } while (cursor !== "0");
  await redis.quit();
}

let failed = false;
try {
  const queue = new Queue(name, { connection, prefix });
  await queue.waitUntilReady();
  const prio = priorities();

  // Enqueue: from the first add to the last add acknowledged.
  const t0 = now();
  await produce(batches(), CLIENTS, ([s, e]) => {
    const jobs = [];
    for (let i = s; i < e; i++) {
      jobs.push({ name, data: { i }, opts: { priority: 11 - prio[i], removeOnComplete } });
    }
    return queue.addBulk(jobs);
  });
  const enqueueMs = now() - t0;

  // Drain: from creating the worker to the last job moved to completed (its 'completed' event
  // follows the Redis script that finishes it).
  let done = 0;
  let allDone;
  const finished = new Promise((resolve) => (allDone = resolve));
  const t1 = now();
  const worker = new Worker(name, async () => {}, { connection, prefix, concurrency: CONCURRENCY });
  worker.on("completed", () => {
    if (++done === JOBS) allDone();
  });
  worker.on("failed", (job, err) => console.error(`bullmq job failed: ${err}`));
  await finished;
  const drainMs = now() - t1;
  await worker.close();
  const counts = await queue.getJobCounts("wait", "prioritized", "active");
  await queue.close();
  const left = Object.values(counts).reduce((a, b) => a + b, 0);
  if (left !== 0) throw new Error(`${left} jobs left: ${JSON.stringify(counts)}`);
  report("bullmq", version, { jobs: JOBS, enqueueMs, drainMs, settings });
} catch (e) {
  failed = true;
  console.error(e);
} finally {
  await cleanup();
}
process.exit(failed ? 1 : 0);
