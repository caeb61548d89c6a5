// Reads run.sh's JSON lines and prints the medians per peer and the ratios cloro/peer.
//
//   node table.mjs RUNS.jsonl
import { readFileSync } from "node:fs";

const lines = readFileSync(process.argv[2], "utf8").split("\n").filter((l) => l.trim() !== "");
const rows = {
  "graphile-worker": { enqueue: [], drain: [], version: "" },
  bullmq: { enqueue: [], drain: [], version: "" },
  "cloro (SQLite)": { enqueue: [], drain: [] },
  "cloro (PostgreSQL)": { enqueue: [], drain: [] },
  "cloro (PostgreSQL, 2 nodes)": { enqueue: [], drain: [] },
};
for (const l of lines) {
  let o;
  try {
    o = JSON.parse(l);
  } catch {
    continue;
  }
  const r = o.r || {};
  switch (o.who) {
    case "graphile":
    case "bullmq": {
      const row = rows[o.who === "graphile" ? "graphile-worker" : "bullmq"];
      row.version = r.version;
      row.enqueue.push(r.enqueuePerSec);
      row.drain.push(r.drainPerSec);
      break;
    }
    case "cloro-sqlite-drain":
      rows["cloro (SQLite)"].drain.push(r.tasksPerSecond);
      break;
    case "cloro-pg-drain":
      rows["cloro (PostgreSQL)"].drain.push(r.tasksPerSecond);
      break;
    case "cloro-pg-drain-2":
      rows["cloro (PostgreSQL, 2 nodes)"].drain.push(r.tasksPerSecond);
      break;
    case "cloro-sqlite-enqueue":
      rows["cloro (SQLite)"].enqueue.push(r.tasksPerSecond);
      break;
    case "cloro-pg-enqueue":
      rows["cloro (PostgreSQL)"].enqueue.push(r.tasksPerSecond);
      break;
  }
}

function median(xs) {
  const v = xs.filter((x) => typeof x === "number" && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}
const fmt = (x) => (x === null ? "-" : Math.round(x).toLocaleString("en-US"));
const ratio = (a, b) => (a === null || b === null || b === 0 ? "-" : `${(a / b).toFixed(2)}x`);
const pad = (s, n) => String(s).padEnd(n);
const lpad = (s, n) => String(s).padStart(n);

const med = {};
console.log(`${pad("peer", 28)} ${lpad("enqueue/s", 10)} ${lpad("drain/s", 10)}  runs`);
for (const [name, row] of Object.entries(rows)) {
  med[name] = { enqueue: median(row.enqueue), drain: median(row.drain) };
  const label = row.version ? `${name} ${row.version}` : name;
  const n = Math.max(row.enqueue.length, row.drain.length);
  console.log(`${pad(label, 28)} ${lpad(fmt(med[name].enqueue), 10)} ${lpad(fmt(med[name].drain), 10)}  ${n}`);
}
console.log("");
console.log(`${pad("cloro / peer (medians)", 50)} ${lpad("enqueue", 8)} ${lpad("drain", 8)}`);
for (const c of ["cloro (SQLite)", "cloro (PostgreSQL)", "cloro (PostgreSQL, 2 nodes)"]) {
  for (const p of ["graphile-worker", "bullmq"]) {
    console.log(
      `${pad(`${c} / ${p}`, 50)} ${lpad(ratio(med[c].enqueue, med[p].enqueue), 8)} ${lpad(ratio(med[c].drain, med[p].drain), 8)}`,
    );
  }
}
