// graphile-worker under issue 14's workload (see README.md): bulk adds through WorkerUtils.addJobs,
// then run() at concurrency 50 with the local queue and batched completion. One JSON line on stdout.
//
// A scratch database `cloro_peers_<pid>` is created on $PEERS_PG's server and dropped afterwards.
import { createRequire } from "node:module";
import pg from "pg";
import { JOBS, BATCH, CLIENTS, CONCURRENCY, intEnv, priorities, batches, produce, now, report } from "./common.mjs";

// The library reads NO_LOG_SUCCESS when it loads: without it every job logs a "Completed task" line.
process.env.NO_LOG_SUCCESS = "1";
const { makeWorkerUtils, run, Logger } = await import("graphile-worker");
const version = createRequire(import.meta.url)("graphile-worker/package.json").version;

const adminUrl = process.env.PEERS_PG || "postgres://postgres@127.0.0.1:5432/test";
const dbName = `cloro_peers_${process.pid}`;
const dbUrl = (() => {
  const u = new URL(adminUrl);
  u.pathname = `/${dbName}`;
  return u.toString();
})();

const settings = {
  concurrentJobs: CONCURRENCY,
  // The pool fetches (and locks) this many jobs at once and hands them to its 50 workers (the
  // docs: "if you have very high throughput and extremely fast tasks then a much higher number
  // [than concurrentJobs + 1] may make sense"). Tried 51, 500, 1000, 2000: 51 was far slower,
  // the others within the machine's noise; 1000 kept.
  localQueueSize: intEnv("PEERS_GRAPHILE_LOCAL_QUEUE", 1000),
  // Completions (and failures) are written in batches collected over this many ms (-1: one
  // write per job, the library's default). Tried 0, 10, 50, 100, 250: 0 and 10 slower, 50 kept.
  completeJobBatchDelay: intEnv("PEERS_GRAPHILE_COMPLETE_DELAY", 50),
  failJobBatchDelay: intEnv("PEERS_GRAPHILE_COMPLETE_DELAY", 50),
  // The docs' advice: max(10, concurrentJobs + 2).
  maxPoolSize: intEnv("PEERS_GRAPHILE_POOL", Math.max(10, CONCURRENCY + 2)),
  batch: BATCH,
  producers: CLIENTS,
  priority: "graphile priority = 11 - p (1..10; numerically lower runs first)",
  logging: "NO_LOG_SUCCESS=1, logger at warn",
};

// Warnings and errors only.
const logger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") console.error(`graphile-worker ${level}: ${message}`);
});

const admin = new pg.Client({ connectionString: adminUrl });
await admin.connect();
await admin.query(`CREATE DATABASE ${dbName}`);
let failed = false;
try {
  const utils = await makeWorkerUtils({ connectionString: dbUrl, logger });
  await utils.migrate();
  const prio = priorities();

  // Enqueue: from the first add to the last add acknowledged.
  const t0 = now();
  await produce(batches(), CLIENTS, ([s, e]) => {
    const specs = [];
    for (let i = s; i < e; i++) specs.push({ identifier: "noop", payload: { i }, priority: 11 - prio[i] });
    return utils.addJobs(specs);
  });
  const enqueueMs = now() - t0;
  await utils.release();

  // Drain: from run() to the last job's completion written (the jobs table seen empty).
  const probe = new pg.Client({ connectionString: dbUrl });
  await probe.connect();
  let done = 0;
  let allRan;
  const ran = new Promise((resolve) => (allRan = resolve));
  const t1 = now();
  const runner = await run({
    logger,
    noHandleSignals: true,
    taskList: {
      noop: async () => {
        if (++done === JOBS) allRan();
      },
    },
    preset: {
      worker: {
        connectionString: dbUrl,
        concurrentJobs: settings.concurrentJobs,
        maxPoolSize: settings.maxPoolSize,
        localQueue: { size: settings.localQueueSize },
        completeJobBatchDelay: settings.completeJobBatchDelay,
        failJobBatchDelay: settings.failJobBatchDelay,
      },
    },
  });
  await ran;
  for (;;) {
    const { rows } = await probe.query("SELECT EXISTS (SELECT 1 FROM graphile_worker._private_jobs) AS left");
    if (!rows[0].left) break;
    await new Promise((r) => setTimeout(r, 1));
  }
  const drainMs = now() - t1;
  await runner.stop();
  await probe.end();
  if (done !== JOBS) throw new Error(`ran ${done} jobs, expected ${JOBS}`);
  report("graphile-worker", version, { jobs: JOBS, enqueueMs, drainMs, settings });
} catch (e) {
  failed = true;
  console.error(e);
} finally {
  await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
  await admin.end();
}
process.exit(failed ? 1 : 0);
