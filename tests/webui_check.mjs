// Drives the web UI in headless Chromium (Debian's /usr/bin/chromium through
// playwright-core) and prints PASS:/FAIL: lines for tests/e2e_webui.sh:
//   node tests/webui_check.mjs URL EXPECTED_NODES_JSON SCREENSHOT.png [N_SPARES]
// EXPECTED_NODES_JSON: [{"role": "starter", "index": 0, "layers": [0, 2]}, ...]
// N_SPARES: spares listed in the configuration, none started (0 when left out).
// Checks: the page loads with no console error and no failed request; a chat
// message gets a streamed answer (non-empty, several pieces on screen one
// after another); the cluster view shows every node with its layer range,
// and the spares below, each unreachable.
import { chromium } from "playwright-core";

const [url, expectedJson, shot, nSparesArg] = process.argv.slice(2);
const nSpares = Number(nSparesArg || 0);
const expected = JSON.parse(expectedJson);
const chromePath = process.env.CHROMIUM || "/usr/bin/chromium";

const pass = (name) => console.log(`PASS: webui: ${name}`);
const fail = (name, why) => console.log(`FAIL: webui: ${name}: ${String(why).replace(/\s+/g, " ").slice(0, 400)}`);
const check = (name, ok, why) => (ok ? pass(name) : fail(name, why));

const browser = await chromium.launch({
    executablePath: chromePath,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-proxy-server"],
});
const errors = [];
try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    page.on("console", (m) => { if (m.type() === "error") errors.push(`console: ${m.text()}`); });
    page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
    page.on("requestfailed", (r) => {
        // The chat's own abort is not a failure; nothing else may fail.
        if (!/ERR_ABORTED/.test(r.failure()?.errorText || "")) errors.push(`request failed: ${r.url()} ${r.failure()?.errorText}`);
    });
    page.on("response", (r) => { if (r.status() >= 400) errors.push(`HTTP ${r.status()}: ${r.url()}`); });

    const resp = await page.goto(url, { waitUntil: "load", timeout: 15000 });
    check("GET / answers the page", resp && resp.ok() && /text\/html/.test(resp.headers()["content-type"] || ""),
          `status ${resp && resp.status()}, ${resp && resp.headers()["content-type"]}`);
    check("title", (await page.title()) === "mdi", await page.title());

    // The cluster view: every node with its layer range, from /api/cluster.
    let rows = [];
    try {
        await page.waitForFunction((n) => document.querySelectorAll("#nodes tr.node").length === n,
                                   expected.length, { timeout: 10000 });
    } catch (e) { /* reported below */ }
    rows = await page.$$eval("#nodes tr.node", (trs) => trs.map((tr) => ({
        role: tr.dataset.role, index: Number(tr.dataset.index),
        layers: tr.querySelector("td.layers").textContent, state: tr.children[3].textContent,
        addr: tr.children[1].textContent,
    })));
    const want = expected.map((n) => ({ role: n.role, index: n.index, layers: `[${n.layers[0]}, ${n.layers[1]})` }));
    const got = rows.map((r) => ({ role: r.role, index: r.index, layers: r.layers }));
    check(`the cluster view shows every node (${expected.length}) with its layer range`,
          JSON.stringify(got) === JSON.stringify(want), `got ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
    check("every node is running", rows.length > 0 && rows.every((r) => r.state === "running"),
          JSON.stringify(rows));
    const spares = await page.$$eval("#nodes tr.spare", (trs) => trs.map((tr) => ({
        index: Number(tr.dataset.index), name: tr.children[0].textContent, state: tr.children[3].textContent,
    })));
    check(`the spares listed (${nSpares}), unreachable`,
          spares.length === nSpares && spares.every((s, i) => s.index === i && s.name === "spare " + i &&
                                                          s.state === "unreachable"),
          JSON.stringify(spares));
    const polls0 = Number(await page.evaluate(() => document.body.dataset.clusterPolls || 0));
    await page.waitForTimeout(2200);
    const polls1 = Number(await page.evaluate(() => document.body.dataset.clusterPolls || 0));
    check("the cluster view refreshes every second", polls1 >= polls0 + 1, `${polls0} then ${polls1} polls`);

    // The chat: the assistant's text is sampled at every change of the DOM,
    // so that a streamed answer shows as several growing texts.
    await page.evaluate(() => {
        window.__seen = [];
        new MutationObserver(() => {
            const m = document.querySelector(".msg.assistant:last-of-type .text");
            if (m && window.__seen[window.__seen.length - 1] !== m.textContent) window.__seen.push(m.textContent);
        }).observe(document.getElementById("messages"), { childList: true, subtree: true, characterData: true });
    });
    await page.fill("#prompt", "Once upon a time");
    await page.click("#send");
    let done = true;
    try {
        await page.waitForSelector(".msg.assistant[data-done='1']", { timeout: 60000 });
    } catch (e) { done = false; }
    const answer = await page.$eval(".msg.assistant .text", (e) => e.textContent).catch(() => "");
    const pieces = Number(await page.$eval(".msg.assistant", (e) => e.dataset.pieces).catch(() => 0));
    const seen = await page.evaluate(() => window.__seen.filter((s) => s.length > 0));
    const isError = await page.$(".msg.assistant.error");
    check("a chat message gets an answer", done && !isError && answer.trim().length > 0,
          `done ${done}, error ${!!isError}, answer ${JSON.stringify(answer)}`);
    check("the answer streams in several pieces", pieces >= 3 && seen.length >= 3,
          `${pieces} pieces, ${seen.length} distinct texts on screen`);
    check("the pieces grow one text", seen.every((s, i) => i === 0 || s.startsWith(seen[i - 1])),
          JSON.stringify(seen.slice(0, 5)));
    console.log(`INFO: webui: answer in ${pieces} pieces: ${JSON.stringify(answer.slice(0, 120))}`);

    // Figures after the chat: the cluster view saw the work.
    await page.waitForTimeout(1500);
    const tps = Number(await page.evaluate(() => document.body.dataset.tokensPerS || 0));
    check("the cluster view shows tokens/s after the chat", tps > 0, `${tps} tokens/s`);

    await page.screenshot({ path: shot, fullPage: true });
    pass(`screenshot ${shot}`);
    check("no console errors, no failed requests", errors.length === 0, errors.join(" | "));
} catch (e) {
    fail("browser session", e.stack || e);
} finally {
    await browser.close();
}
