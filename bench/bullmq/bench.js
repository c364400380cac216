// BullMQ peer of the jobhost benchmark (driven by bench/peers/bullmq.py).
//   node bench.js worker <redis-url> <concurrency>   a Worker; no-op jobs count themselves in Redis
//   node bench.js producer <redis-url> <mode> <runs> <batch> <rate> <seconds>
// The producer speaks bench/common.py's line protocol: "ready"; "warm" -> "warmed"; "go" -> "done".
"use strict";
const { Queue, Worker } = require("bullmq");
const IORedis = require("ioredis");
const readline = require("readline");

const QUEUE = "bench";
const WARMUP = 20;
const now = () => (performance.timeOrigin + performance.now()) / 1000;
const emit = (event, fields = {}) => process.stdout.write(JSON.stringify({ event, ...fields }) + "\n");
const connection = (url) => new IORedis(url, { maxRetriesPerRequest: null });

async function worker(url, concurrency) {
  const target = Number(process.env.BENCH_PEER_TARGET || 0);
  const counter = connection(url);
  const done = async () => {
    if ((await counter.incr("bench:done")) === target) await counter.set("bench:end", String(now()));
  };
  const w = new Worker(
    QUEUE,
    async (job) => {
      if (job.name === "stamp") {
        const started = now();
        await counter.rpush("bench:lat", String(started - job.data.t));
      }
      await done();
    },
    { connection: connection(url), concurrency },
  );
  const stop = async () => {
    await w.close();
    await counter.quit();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

async function producer(url, mode, runs, batch, rate, seconds) {
  const queue = new Queue(QUEUE, { connection: connection(url) });
  await queue.waitUntilReady();
  emit("ready", { pid: process.pid });
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    const command = line.trim();
    if (command === "warm") {
      for (let i = 0; i < WARMUP; i++) await queue.add("noop", { i: -1 - i });
      emit("warmed");
    } else if (command === "go") {
      const tFirst = now();
      const out = { t_first: tFirst, enqueued: runs };
      if (mode === "paced") {
        const total = Math.floor(rate * seconds);
        const start = performance.now();
        let late = 0;
        for (let i = 0; i < total; i++) {
          const delay = start + (i * 1000) / rate - performance.now();
          if (delay > 0) await new Promise((r) => setTimeout(r, delay));
          else if (delay < -5) late++;
          await queue.add("stamp", { t: now() });
        }
        Object.assign(out, { enqueued: total, late });
      } else if (mode === "bulk") {
        for (let s = 0; s < runs; s += batch) {
          const jobs = [];
          for (let i = s; i < Math.min(s + batch, runs); i++) jobs.push({ name: "noop", data: { i } });
          await queue.addBulk(jobs);
        }
      } else {
        for (let i = 0; i < runs; i++) await queue.add("noop", { i });
      }
      out.t_done = now();
      emit("done", out);
    } else {
      break;
    }
  }
  await queue.close();
  process.exit(0);
}

const [role, url, ...rest] = process.argv.slice(2);
if (role === "worker") worker(url, Number(rest[0]));
else producer(url, rest[0], Number(rest[1]), Number(rest[2]), Number(rest[3]), Number(rest[4]));
