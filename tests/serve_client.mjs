// serve_client.mjs: drives bin/starter --serve with OpenAI's official
// client (openai, pinned in .ci/run) and checks its answers against the
// model's greedy output computed beforehand by bin/starter itself.
//
//   node tests/serve_client.mjs BASE_URL REFS.json LABEL SECTIONS
//
// REFS.json: {"n_tokens", "prompts": [...], "texts": [...], "n_generated":
// [...], "chat": {"messages", "text", "n_generated"}, "slots", "queue"}.
// SECTIONS: comma-separated, of basic, concurrent, disconnect, overflow,
// errors, failover (tests/e2e_serve_failover.sh). Prints one PASS:/FAIL:
// line per check (tests/run.sh counts them).
import { execSync } from 'node:child_process';
import fs from 'node:fs';
import OpenAI from 'openai';

const [base, refsPath, label, sectionsArg] = process.argv.slice(2);
const refs = JSON.parse(fs.readFileSync(refsPath, 'utf8'));
const sections = new Set((sectionsArg || 'basic').split(','));
const client = new OpenAI({ baseURL: base + '/v1', apiKey: 'none', maxRetries: 0, timeout: 120000 });
const N = refs.n_tokens;
let failures = 0;

function check(name, ok, detail) {
  if (ok) console.log(`PASS: e2e_serve ${label} ${name}`);
  else {
    failures++;
    console.log(`FAIL: e2e_serve ${label} ${name}: ${String(detail).replace(/\n/g, '\\n').slice(0, 600)}`);
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function metric(name) {
  const text = await (await fetch(base + '/metrics')).text();
  const m = text.match(new RegExp('^' + name + ' (\\S+)$', 'm'));
  return m ? Number(m[1]) : NaN;
}

async function health() {
  return (await fetch(base + '/health')).json();
}

async function waitFor(cond, ms) {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if (await cond()) return true;
    await sleep(20);
  }
  return false;
}

async function streamCompletion(prompt, extra = {}) {
  const stream = await client.completions.create({ prompt, max_tokens: N, temperature: 0, stream: true, ...extra });
  let text = '', finish = null, chunks = 0;
  for await (const c of stream) {
    if (c.choices.length) {
      text += c.choices[0].text;
      chunks++;
      if (c.choices[0].finish_reason) finish = c.choices[0].finish_reason;
    }
  }
  return { text, finish, chunks };
}

async function basic() {
  const r = await client.completions.create({ prompt: refs.prompts[0], max_tokens: N, temperature: 0 });
  check('completion equals the greedy output', r.choices[0].text === refs.texts[0],
        JSON.stringify([r.choices[0].text, refs.texts[0]]));
  check('completion usage', r.usage.completion_tokens === refs.n_generated[0] && r.usage.prompt_tokens > 0 &&
        r.usage.total_tokens === r.usage.prompt_tokens + r.usage.completion_tokens, JSON.stringify(r.usage));
  check('completion finish_reason', r.choices[0].finish_reason === (refs.n_generated[0] < N ? 'stop' : 'length'),
        r.choices[0].finish_reason);
  const s = await streamCompletion(refs.prompts[1]);
  check('streamed completion equals the greedy output', s.text === refs.texts[1] && s.chunks > 1,
        JSON.stringify([s.text, refs.texts[1], s.chunks]));
  const c = await client.chat.completions.create({ messages: refs.chat.messages, max_tokens: N, temperature: 0 });
  check('chat completion equals the greedy output of the rendered conversation',
        c.choices[0].message.content === refs.chat.text && c.choices[0].message.role === 'assistant',
        JSON.stringify([c.choices[0].message.content, refs.chat.text]));
  check('chat usage', c.usage.completion_tokens === refs.chat.n_generated, JSON.stringify(c.usage));
  const cs = await client.chat.completions.create({ messages: refs.chat.messages, max_tokens: N, temperature: 0,
                                                    stream: true, stream_options: { include_usage: true } });
  let text = '', usage = null, role = null;
  for await (const ch of cs) {
    if (ch.choices.length) {
      text += ch.choices[0].delta.content || '';
      role = role || ch.choices[0].delta.role;
    }
    if (ch.usage) usage = ch.usage;
  }
  check('streamed chat equals the greedy output, usage in the last chunk',
        text === refs.chat.text && role === 'assistant' && usage && usage.completion_tokens === refs.chat.n_generated,
        JSON.stringify([text, refs.chat.text, usage]));
  // a stop string: the text ends before it
  const cut = refs.texts[0].indexOf(' ', 8);
  if (cut > 0) {
    const stop = refs.texts[0].slice(cut, cut + 3);
    const want = refs.texts[0].slice(0, refs.texts[0].indexOf(stop));
    const r2 = await client.completions.create({ prompt: refs.prompts[0], max_tokens: N, temperature: 0, stop });
    check('a stop string ends the text before it', r2.choices[0].text === want && r2.choices[0].finish_reason === 'stop',
          JSON.stringify([stop, r2.choices[0].text, want]));
    const s2 = await streamCompletion(refs.prompts[0], { stop: [stop, 'zzzz'] });
    check('a streamed stop string too', s2.text === want && s2.finish === 'stop', JSON.stringify([s2.text, want]));
  }
  const models = await client.models.list();
  check('GET /v1/models', models.data.length === 1 && models.data[0].id, JSON.stringify(models.data));
  // the same seed and parameters give the same text
  const a1 = await client.completions.create({ prompt: refs.prompts[2], max_tokens: N, temperature: 1, seed: 7 });
  const a2 = await client.completions.create({ prompt: refs.prompts[2], max_tokens: N, temperature: 1, seed: 7 });
  check('sampling with a seed is repeatable', a1.choices[0].text === a2.choices[0].text,
        JSON.stringify([a1.choices[0].text, a2.choices[0].text]));
}

// Every slot free and nothing queued (a finished request's slot is free
// only once the engine has released it, which may follow its answer).
async function idle() {
  return waitFor(async () => {
    const h = await health();
    return h.slots_busy === 0 && h.queue_depth === 0;
  }, 10000);
}

async function concurrent() {
  await idle();
  const n = Math.min(8, refs.prompts.length);
  let maxQueue = 0, polling = true;
  const poll = (async () => {
    while (polling) {
      try { maxQueue = Math.max(maxQueue, (await health()).queue_depth); } catch { /* ignore */ }
      await sleep(5);
    }
  })();
  const res = await Promise.all(refs.prompts.slice(0, n).map((p) => streamCompletion(p)));
  polling = false;
  await poll;
  const bad = res.map((r, i) => (r.text === refs.texts[i] ? null : i)).filter((i) => i !== null);
  check(`${n} concurrent streaming clients each get the tokens they get alone`, bad.length === 0,
        bad.map((i) => JSON.stringify([i, res[i].text, refs.texts[i]])).join(' '));
  console.log(`INFO: e2e_serve ${label}: most requests seen queued at once: ${maxQueue}`);
  const h = await health();
  check('every slot free afterwards', h.slots_busy === 0 && h.queue_depth === 0, JSON.stringify(h));
}

// Long requests (EOS ignored, up to the context) that hold their slots.
function longStream(prompt) {
  const ctl = new AbortController();
  const st = { chunks: 0, done: false, error: null, ctl };
  st.promise = (async () => {
    try {
      const s = await client.completions.create({ prompt, max_tokens: refs.long_tokens, temperature: 0, stream: true,
                                                  ignore_eos: true }, { signal: ctl.signal });
      for await (const c of s) if (c.choices.length) st.chunks++;
      st.done = true;
    } catch (e) {
      st.error = e;
    }
  })();
  return st;
}

async function disconnect() {
  await idle();
  const slots = refs.slots;
  const before = await metric('mdi_tokens_generated_total');
  const long = [];
  for (let i = 0; i < slots; i++) long.push(longStream(refs.prompts[i % refs.prompts.length]));
  const started = await waitFor(async () => long.every((s) => s.chunks > 0), 20000);
  check('long requests fill every slot', started && (await health()).slots_busy === slots,
        JSON.stringify(await health()));
  // one more waits in the queue
  const queued = streamCompletion(refs.prompts[0]);
  const inQueue = await waitFor(async () => (await health()).queue_depth === 1, 5000);
  check('a request beyond the slots waits in the queue', inQueue, JSON.stringify(await health()));
  long[0].ctl.abort();
  const q = await queued;
  check('a client that disconnects mid-stream frees its slot: the queued request starts and completes',
        q.text === refs.texts[0] && long.slice(1).some((s) => !s.done), JSON.stringify([q.text, refs.texts[0]]));
  for (const s of long) s.ctl.abort();
  await Promise.all(long.map((s) => s.promise));
  const freed = await waitFor(async () => (await health()).slots_busy === 0, 10000);
  const after = await metric('mdi_tokens_generated_total');
  check('every disconnected request was cancelled early', freed && after - before < slots * refs.long_tokens,
        `busy ${JSON.stringify(await health())}, ${after - before} tokens of ${slots * refs.long_tokens}`);
}

async function overflow() {
  await idle();
  // the slots first, then the queue: requests submitted at once all wait in
  // the queue until the engine's next round admits them
  const long = [];
  for (let i = 0; i < refs.slots; i++) long.push(longStream(refs.prompts[i % refs.prompts.length]));
  const busy = await waitFor(async () => (await health()).slots_busy === refs.slots, 20000);
  for (let i = 0; i < refs.queue; i++) long.push(longStream(refs.prompts[i % refs.prompts.length]));
  const full = await waitFor(async () => (await health()).queue_depth === refs.queue, 20000);
  let status = 0, body = null;
  try {
    await client.completions.create({ prompt: refs.prompts[0], max_tokens: 2 });
  } catch (e) {
    status = e.status;
    body = e.error;
  }
  check('queue overflow gives 429 in OpenAI\'s error shape', busy && full && status === 429 && body && body.message,
        JSON.stringify([busy, full, status, body, await health(), long.map((s) => [s.chunks, s.done, String(s.error)])]));
  for (const s of long) s.ctl.abort();
  await Promise.all(long.map((s) => s.promise));
  await idle();
}

async function raw(method, path, body) {
  const r = await fetch(base + path, { method, headers: { 'Content-Type': 'application/json' },
                                       body: body === undefined ? undefined : body });
  let j = null;
  try { j = await r.json(); } catch { /* not JSON */ }
  return { status: r.status, j };
}

async function errors() {
  const shape = (j) => j && j.error && typeof j.error.message === 'string' && 'type' in j.error &&
    'param' in j.error && 'code' in j.error;
  let r = await raw('POST', '/v1/completions', '{"prompt": ');
  check('malformed JSON: 400', r.status === 400 && shape(r.j), JSON.stringify(r));
  r = await raw('POST', '/v1/chat/completions', '{"messages": "hi"}');
  check('malformed messages: 400 naming the field', r.status === 400 && shape(r.j) && r.j.error.param === 'messages',
        JSON.stringify(r));
  r = await raw('POST', '/v1/completions', '{"prompt": "x", "max_tokens": -3}');
  check('a bad max_tokens: 400 naming it', r.status === 400 && r.j.error.param === 'max_tokens', JSON.stringify(r));
  r = await raw('POST', '/v1/completions', '{"prompt": "x", "temperature": "warm"}');
  check('a bad temperature: 400 naming it', r.status === 400 && r.j.error.param === 'temperature', JSON.stringify(r));
  let status = 0, err = null;
  try {
    await client.completions.create({ prompt: 'Once upon a time '.repeat(400), max_tokens: 4 });
  } catch (e) {
    status = e.status;
    err = e.error;
  }
  const msg = err && err.message ? err.message : '';
  const nums = (msg.match(/\d+/g) || []).map(Number);
  check('a prompt longer than the context: 400 naming both lengths',
        status === 400 && nums.some((x) => x > 1000) && nums.some((x) => x > 0 && x <= 4096), JSON.stringify([status, err]));
  r = await raw('GET', '/v1/nothing');
  check('unknown route: 404', r.status === 404 && shape(r.j), JSON.stringify(r));
  r = await raw('GET', '/v1/chat/completions');
  check('wrong method: 405', r.status === 405 && shape(r.j), JSON.stringify(r));
  const ok = await client.completions.create({ prompt: refs.prompts[0], max_tokens: N, temperature: 0 });
  check('the service keeps serving after bad requests', ok.choices[0].text === refs.texts[0], ok.choices[0].text);
  const m = await (await fetch(base + '/metrics')).text();
  check('GET /metrics: requests, tokens, queue, slots, histograms, per-node time',
        /mdi_requests_total\{endpoint="\/v1\/completions",code="400"\} [1-9]/.test(m) &&
        /^mdi_tokens_generated_total [1-9]/m.test(m) && /^mdi_queue_depth /m.test(m) && /^mdi_slots_busy /m.test(m) &&
        /mdi_time_to_first_token_seconds_bucket\{le="\+Inf"\} [1-9]/.test(m) &&
        /mdi_token_latency_seconds_count [1-9]/.test(m) && /mdi_node_compute_seconds\{node=/.test(m) &&
        /mdi_node_wait_seconds\{node=/.test(m), m.slice(0, 400));
  // on a ring, every secondary's compute time so far, not only the starter's
  const sec = [...m.matchAll(/^mdi_node_compute_seconds\{node="\d+",role="secondary"[^}]*\} ([0-9.e+-]+)$/gm)];
  if (sec.length)
    check('GET /metrics: each secondary\'s compute time so far', sec.every((x) => Number(x[1]) > 0),
          sec.map((x) => x[0]).join(' | '));
}

// 4 streaming clients; once each has had tokens, the secondary MDI_KILL_PID
// is killed (kill -9; MDI_KILLED_FILE, when set, is created then so that
// the script can restart it), or, with MDI_CUT_CMD, that shell command
// runs instead (it breaks the ring without killing a node; the failover
// then names no node, MDI_FAILOVER_LAST: a regular expression its
// description must match): every client completes with the text it gets
// without the failure, and the service counts one failover.
async function failover() {
  await idle();
  const pid = Number(process.env.MDI_KILL_PID);
  const cut = process.env.MDI_CUT_CMD;
  const lastRe = new RegExp(process.env.MDI_FAILOVER_LAST || ' secondary 1 .* replaced by .*: [0-9.]+ s lost$');
  // the 4 prompts with the longest greedy outputs: still streaming at the kill
  const order = refs.prompts.map((_, i) => i).sort((a, b) => refs.n_generated[b] - refs.n_generated[a]).slice(0, 4);
  const st = order.map((i) => {
    const s = { i, text: '', chunks: 0, finish: null, error: null };
    s.promise = (async () => {
      try {
        const stream = await client.completions.create({ prompt: refs.prompts[i], max_tokens: N, temperature: 0,
                                                         stream: true });
        for await (const c of stream) {
          if (!c.choices.length) continue;
          s.text += c.choices[0].text;
          s.chunks++;
          if (c.choices[0].finish_reason) s.finish = c.choices[0].finish_reason;
        }
      } catch (e) {
        s.error = e;
      }
    })();
    return s;
  });
  const started = await waitFor(async () => st.every((s) => s.chunks >= 2 || s.error), 30000);
  const midway = started && st.every((s) => s.finish === null && !s.error);
  const seen = st.map((s) => s.chunks);
  let cutOut = '';
  if (cut) {
    try {
      cutOut = execSync(cut, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      cutOut = 'failed: ' + String(e.stderr || e);
    }
  } else {
    process.kill(pid, 'SIGKILL');
  }
  if (process.env.MDI_KILLED_FILE) fs.writeFileSync(process.env.MDI_KILLED_FILE, '');
  await Promise.all(st.map((s) => s.promise));
  check((cut ? 'the ring cut' : 'the secondary killed') + ' mid-stream (every client had tokens, none had finished)',
        midway && !cutOut.startsWith('failed: '), JSON.stringify(seen) + ' ' + cutOut);
  const bad = st.filter((s) => s.error || s.text !== refs.texts[s.i]);
  check('4 streaming clients complete with exactly the text they get without the failure', bad.length === 0,
        bad.map((s) => JSON.stringify([s.i, s.error ? String(s.error) : s.text, refs.texts[s.i]])).join(' '));
  const n = await metric('mdi_failovers_total');
  check('GET /metrics: mdi_failovers_total 1', n === 1, n);
  const lost = await metric('mdi_failover_lost_seconds_total');
  check('GET /metrics: the failover\'s time lost', lost > 0, lost);
  const c = await (await fetch(base + '/api/cluster')).json();
  check('GET /api/cluster: the failover, its node and time lost',
        c.failovers && c.failovers.count === 1 && lastRe.test(' ' + c.failovers.last),
        JSON.stringify(c.failovers));
  const h = await health();
  check('the service is healthy after the failover', h.status === 'ok', JSON.stringify(h));
}

try {
  if (sections.has('failover')) await failover();
  if (sections.has('basic')) await basic();
  if (sections.has('concurrent')) await concurrent();
  if (sections.has('disconnect')) await disconnect();
  if (sections.has('overflow')) await overflow();
  if (sections.has('errors')) await errors();
} catch (e) {
  check('the client ran', false, e && e.stack ? e.stack : e);
}
process.exit(failures ? 1 : 0);
