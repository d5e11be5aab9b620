// fedrollup explorer: polls the node's public read API and redraws the page.
// Everything it shows is built with createElement / textContent (never innerHTML), so data
// from the chain (messages, ids, errors) is always text, never markup.
"use strict";

const POLL_MS = 1500;
const BLOCKS_PER_TICK = 300; // blocks indexed per poll while catching up with the head
const PARALLEL = 6; // requests in flight at once
const PROOFS_PER_TICK = 60; // settlement records re-read per poll (oldest unsettled first)
const RECENT_BLOCKS = 10;
const BATCHES_SHOWN = 10;
const FINAL_ROUND_STATUSES = new Set(["aggregated", "expired"]);
const SVG_NS = "http://www.w3.org/2000/svg";

const state = {
  health: null,
  indexed: 0, // blocks read so far (heights 1..indexed)
  recentBlocks: [],
  jobIds: new Set(),
  jobs: new Map(), // job id -> job
  messages: new Map(), // job id -> the train proposal's messages
  rounds: new Map(), // "job/round" -> round
  records: new Map(), // record id -> {record, height, batch, proof}
  batches: null, // null: no L1
  roundOverrides: new Map(), // "job/round" -> open or closed, as the reader chose
  ticks: 0,
};

// -- reads ---------------------------------------------------------------------------------

async function getJSON(path) {
  const resp = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
  if (resp.status === 404) return null;
  if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
  return resp.json();
}

async function inParallel(items, work) {
  for (let i = 0; i < items.length; i += PARALLEL) {
    await Promise.all(items.slice(i, i + PARALLEL).map(work));
  }
}

function range(first, last) {
  const out = [];
  for (let i = first; i <= last; i++) out.push(i);
  return out;
}

async function indexBlocks(head) {
  const last = Math.min(head, state.indexed + BLOCKS_PER_TICK);
  const heights = range(state.indexed + 1, last);
  for (let i = 0; i < heights.length; i += PARALLEL) {
    const chunk = heights.slice(i, i + PARALLEL);
    const blocks = await Promise.all(chunk.map((h) => getJSON(`/v1/blocks/${h}?full=1`)));
    for (const block of blocks) {
      if (block === null) return; // not there yet: read it next time
      indexBlock(block);
      state.indexed = block.height;
    }
  }
}

function indexBlock(block) {
  for (const receipt of block.receipts) {
    for (const ev of receipt.events) {
      if (ev.name === "JobCreated") state.jobIds.add(Number(ev.data.job_id));
    }
    for (const record of receipt.records) {
      if (!state.records.has(record.record_id)) {
        state.records.set(record.record_id, {
          record,
          height: block.height,
          batch: undefined,
          proof: null,
        });
      }
    }
  }
  state.recentBlocks.unshift({
    height: block.height,
    hash: block.hash,
    time: block.timestamp_ms,
    actions: block.action_count,
    l1Messages: block.l1_messages.length,
    failed: block.receipts.filter((r) => r.status === "failed").length,
  });
  state.recentBlocks.length = Math.min(state.recentBlocks.length, RECENT_BLOCKS);
}

async function readJob(id) {
  const [job, messages] = await Promise.all([
    getJSON(`/v1/jobs/${id}`),
    getJSON(`/v1/proposals/${id}/messages`),
  ]);
  if (job === null) return;
  state.jobs.set(id, job);
  state.messages.set(id, messages === null ? [] : messages.messages);
  const stale = range(1, Math.min(job.current_round, job.terms.rounds)).filter((r) => {
    const known = state.rounds.get(`${id}/${r}`);
    return known === undefined || !FINAL_ROUND_STATUSES.has(known.status);
  });
  await inParallel(stale, async (r) => {
    const rnd = await getJSON(`/v1/jobs/${id}/rounds/${r}`);
    if (rnd !== null) state.rounds.set(`${id}/${r}`, rnd);
  });
}

function batchOf(height) {
  return (state.batches || []).find((b) => b.first_height <= height && height <= b.last_height);
}

// A record's proof is read only when it may have changed: its batch is finalized (the keeper
// may have executed it) or its batch is older than the listed ones. Executed is final.
async function readSettlements() {
  const lastBatched = state.batches && state.batches.length ? state.batches.at(-1).last_height : 0;
  const due = [];
  for (const entry of state.records.values()) {
    entry.batch = batchOf(entry.height);
    if (executedOnL1(entry) === "yes") continue;
    if (entry.batch !== undefined && entry.batch.status !== "finalized") continue;
    if (entry.batch === undefined && entry.height > lastBatched) continue; // not batched yet
    due.push(entry);
  }
  await inParallel(due.slice(0, PROOFS_PER_TICK), async (entry) => {
    entry.proof = await getJSON(`/v1/settlements/${entry.record.record_id}/proof`);
  });
}

async function tick() {
  const health = await getJSON("/v1/health");
  state.health = health;
  await indexBlocks(health.head.height);
  const batches = await getJSON("/v1/batches");
  state.batches = batches === null ? null : batches.batches;
  await inParallel([...state.jobIds].sort((a, b) => a - b), readJob);
  await readSettlements();
}

// -- DOM helpers ---------------------------------------------------------------------------

// el("td", {class: "num"}, "text", childNode): strings become text nodes, never markup.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function short(hex) {
  return hex && hex.length > 14 ? `${hex.slice(0, 8)}…${hex.slice(-4)}` : String(hex);
}

function hexCell(hex) {
  return el("td", { class: "hex", title: hex }, short(hex));
}

function table(id, headers, rows) {
  const head = el("tr", {}, ...headers.map((h) => el("th", {}, h)));
  document.getElementById(id).replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
}

function formatEth(wei) {
  const value = BigInt(wei);
  const unit = 10n ** 18n;
  const frac = ((value % unit) * 10000n) / unit;
  return `${value / unit}.${frac.toString().padStart(4, "0")} ETH`;
}

function percent(bp) {
  return `${(bp / 100).toFixed(2)} %`;
}

// -- views ---------------------------------------------------------------------------------

function renderHead() {
  const h = state.health;
  const items = [
    ["height", h.head.height],
    ["hash", h.head.hash],
    ["state root", h.head.state_root],
    ["pending actions", h.pending_actions],
    ["chain id", h.chain_id],
    ["blocks indexed", `${state.indexed} of ${h.head.height}`],
  ];
  const dl = document.getElementById("head");
  dl.replaceChildren(...items.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-field": k }, v)]));
}

function renderBlocks() {
  table(
    "blocks",
    ["height", "hash", "UTC", "actions", "L1 msgs", "failed"],
    state.recentBlocks.map((b) =>
      el(
        "tr",
        { "data-height": b.height },
        el("td", { class: "num" }, b.height),
        hexCell(b.hash),
        el("td", {}, new Date(b.time).toISOString().slice(11, 19)),
        el("td", { class: "num" }, b.actions),
        el("td", { class: "num" }, b.l1Messages),
        el("td", { class: "num" }, b.failed),
      ),
    ),
  );
}

function renderBatches() {
  const note = document.getElementById("batches-note");
  if (state.batches === null) {
    note.textContent = "This node runs without L1.";
    table("batches", [], []);
    return;
  }
  const finalized = state.batches.filter((b) => b.status === "finalized").length;
  note.textContent = `${state.batches.length} batches listed (the API lists the latest 200), ${finalized} finalized.`;
  const latest = state.batches.slice(-BATCHES_SHOWN).reverse();
  table(
    "batches",
    ["batch", "blocks", "L1 status", "records", "output root"],
    latest.map((b) =>
      el(
        "tr",
        { class: "batch", "data-index": b.index, "data-status": b.status },
        el("td", { class: "num" }, b.index),
        el("td", {}, `${b.first_height}–${b.last_height}`),
        el("td", { class: `status-${b.status}` }, b.status),
        el("td", { class: "num" }, b.records),
        hexCell(b.output_root),
      ),
    ),
  );
}

function accuracyChart(job, rounds) {
  const width = 320;
  const height = 130;
  const pad = { left: 34, right: 8, top: 8, bottom: 20 };
  const points = rounds.filter((r) => r.status === "aggregated");
  const x = (n) => pad.left + ((n - 1) / Math.max(1, job.terms.rounds - 1)) * (width - pad.left - pad.right);
  const y = (bp) => pad.top + (1 - bp / 10000) * (height - pad.top - pad.bottom);
  const chart = svg("svg", {
    class: "chart",
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": `accuracy of job ${job.job_id} per round`,
  });
  for (const bp of [0, 5000, 10000]) {
    chart.append(
      svg("line", { class: "grid", x1: pad.left, x2: width - pad.right, y1: y(bp), y2: y(bp) }),
      svg("text", { x: 2, y: y(bp) + 3 }, `${bp / 100}%`),
    );
  }
  chart.append(svg("text", { x: pad.left, y: height - 4 }, "round 1"));
  chart.append(
    svg("text", { x: width - pad.right - 44, y: height - 4 }, `round ${job.terms.rounds}`),
  );
  if (points.length > 0) {
    const path = points.map((r) => `${x(r.round).toFixed(1)},${y(r.accuracy_bp).toFixed(1)}`);
    chart.append(svg("polyline", { class: "curve", points: path.join(" ") }));
    for (const r of points) {
      chart.append(
        svg(
          "circle",
          { class: "dot", cx: x(r.round), cy: y(r.accuracy_bp), r: 3, "data-round": r.round },
          svg("title", {}, `round ${r.round}: ${percent(r.accuracy_bp)}`),
        ),
      );
    }
  }
  return chart;
}

function participantRows(rnd) {
  if (rnd.decisions.length > 0) {
    return rnd.decisions.map((d) =>
      el(
        "tr",
        {
          class: "participant",
          "data-client": d.client,
          "data-outcome": d.outcome,
          "data-reason": d.reason,
          "data-score": d.score === null ? "" : d.score,
        },
        hexCell(d.client),
        el("td", { class: `outcome outcome-${d.outcome}` }, d.outcome),
        el("td", { class: "reason" }, d.reason),
        el("td", { class: "num score" }, d.score === null ? "–" : d.score),
      ),
    );
  }
  // the round is still open: who committed, who revealed
  return rnd.submissions.map((s) =>
    el(
      "tr",
      { class: "submission", "data-client": s.client },
      hexCell(s.client),
      el("td", { class: "outcome outcome-pending" }, s.revealed ? "revealed" : "committed"),
      el("td", {}, "–"),
      el("td", { class: "num" }, "–"),
    ),
  );
}

function roundDetails(job, rnd, isLatest) {
  const key = `${job.job_id}/${rnd.round}`;
  const count = (o) => rnd.decisions.filter((d) => d.outcome === o).length;
  const summary =
    rnd.status === "aggregated"
      ? `round ${rnd.round} · ${rnd.status} · accuracy ${percent(rnd.accuracy_bp)} · ` +
        `${count("kept")} kept · ${count("excluded")} excluded · ${count("slashed")} slashed`
      : `round ${rnd.round} · ${rnd.status} · ${rnd.submissions.length} submissions`;
  const details = el(
    "details",
    { class: "round", "data-job": job.job_id, "data-round": rnd.round, "data-status": rnd.status },
    el("summary", {}, summary),
    el(
      "table",
      {},
      el("thead", {}, el("tr", {}, ...["participant", "outcome", "reason", "Krum score"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...participantRows(rnd)),
    ),
  );
  // The latest round is open unless the reader closed it; others closed unless opened.
  // Only the reader's choices are kept (a toggle event also follows this assignment).
  const override = state.roundOverrides.get(key);
  details.open = override === undefined ? isLatest : override;
  details.addEventListener("toggle", () => {
    if (details.open === isLatest) state.roundOverrides.delete(key);
    else state.roundOverrides.set(key, details.open);
  });
  return details;
}

function jobView(job) {
  const rounds = range(1, job.terms.rounds)
    .map((r) => state.rounds.get(`${job.job_id}/${r}`))
    .filter((r) => r !== undefined);
  const slashes = rounds.flatMap((r) =>
    r.decisions.filter((d) => d.outcome === "slashed").map((d) => ({ round: r.round, ...d })),
  );
  const facts = [
    ["model", job.model_id],
    ["status", job.status],
    ["round", `${Math.min(job.current_round, job.terms.rounds)} of ${job.terms.rounds}`],
    ["pool left on L2", formatEth(job.pool)],
    ["funded (L2 + L1)", formatEth(job.funded)],
    ["stake required", formatEth(job.terms.stake_required)],
    ["f", job.terms.f],
    ["owner", job.owner],
  ];
  const messages = state.messages.get(job.job_id) || [];
  // the round open by default: the latest one anybody has submitted to
  const withWork = rounds.filter((r) => r.submissions.length > 0 || r.decisions.length > 0);
  const latestWithWork = withWork.length > 0 ? withWork.at(-1).round : 0;
  return el(
    "article",
    { class: "job", "data-job": job.job_id, "data-status": job.status },
    el("h3", {}, `Job ${job.job_id}`),
    el(
      "div",
      { class: "job-top" },
      el("dl", {}, ...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
      accuracyChart(job, rounds),
      el(
        "div",
        {},
        el("strong", {}, `Slashed (${slashes.length})`),
        el(
          "ul",
          { class: "slashes" },
          ...slashes.map((s) =>
            el(
              "li",
              { class: "slash", "data-client": s.client, "data-round": s.round, "data-reason": s.reason },
              el("span", { class: "hex", title: s.client }, short(s.client)),
              ` in round ${s.round}: ${s.reason}`,
            ),
          ),
        ),
      ),
    ),
    ...rounds
      .slice()
      .reverse()
      .map((r) => roundDetails(job, r, r.round === latestWithWork)),
    el("strong", {}, `Messages (${messages.length})`),
    el(
      "ul",
      { class: "messages" },
      ...messages.map((m) =>
        el(
          "li",
          { class: "message", "data-index": m.index },
          el("span", { class: "hex", title: m.author }, short(m.author)),
          ` at block ${m.height}: `,
          el("span", { class: "text" }, m.text),
        ),
      ),
    ),
  );
}

function renderJobs() {
  const jobs = [...state.jobs.values()].sort((a, b) => a.job_id - b.job_id);
  document.getElementById("jobs-note").textContent = jobs.length === 0 ? "No training job yet." : "";
  document.getElementById("jobs").replaceChildren(...jobs.map(jobView));
}

// The keeper's word on a record: "settled" (L1 executed it: final), "failed:<L1 error>" (its
// execution reverted; the keeper retries), or null (not tried yet).
function executedOnL1(entry) {
  const settled = entry.proof === null ? null : entry.proof.settled;
  if (settled === "settled") return "yes";
  return typeof settled === "string" && settled.startsWith("failed") ? "failed" : "no";
}

// [L1 status, its class, batch index, executed on L1]
function settlementStatus(entry) {
  const executed = executedOnL1(entry);
  if (entry.batch !== undefined) {
    return [entry.batch.status, `status-${entry.batch.status}`, entry.batch.index, executed];
  }
  if (entry.proof !== null) {
    const status = entry.proof.batch_status;
    return [status, `status-${status}`, entry.proof.batch_index, executed];
  }
  return ["not batched yet", "status-pending", "–", executed];
}

function renderSettlements() {
  const entries = [...state.records.values()];
  const settled = entries.filter((e) => executedOnL1(e) === "yes").length;
  document.getElementById("settlements-note").textContent =
    `${entries.length} records, ${settled} executed on L1.`;
  table(
    "settlements",
    ["record", "kind", "job", "round", "rollup key", "payee (L1)", "amount", "batch", "L1 status", "executed on L1"],
    entries
      .slice()
      .reverse()
      .map((entry) => {
        const r = entry.record;
        const [status, statusClass, batchIndex, executed] = settlementStatus(entry);
        return el(
          "tr",
          { class: "record", "data-record": r.record_id, "data-kind": r.kind, "data-settled": executed },
          hexCell(r.record_id),
          el("td", {}, r.kind),
          el("td", { class: "num" }, r.job),
          el("td", { class: "num" }, r.round),
          hexCell(r.rollup_key),
          hexCell(r.payee),
          el("td", { class: "num" }, formatEth(r.amount)),
          el("td", { class: "num" }, batchIndex),
          el("td", { class: statusClass }, status),
          el(
            "td",
            { class: executed === "yes" ? "yes" : "no" },
            executed === "failed" ? `${entry.proof.settled} (retried)` : executed,
          ),
        );
      }),
  );
}

function render() {
  renderHead();
  renderBlocks();
  renderBatches();
  renderJobs();
  renderSettlements();
}

// -- loop ----------------------------------------------------------------------------------

async function poll() {
  const live = document.getElementById("live");
  try {
    await tick();
    render();
    state.ticks += 1;
    document.body.dataset.ticks = String(state.ticks);
    live.className = "live";
    live.textContent = `live · head ${state.health.head.height} · updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    live.className = "live error";
    live.textContent = `cannot read the node: ${err.message}`;
  }
  setTimeout(poll, POLL_MS);
}

poll();
