// End-to-end test of the dashboard: a live `moerun local` job (a real coordinator, worker
// daemons and trainer processes), Debian's chromium driven by playwright-core.
//   1. the loss, held-out and heat-map series the page draws equal what the trainer itself
//      wrote to the run's metrics.jsonl (rank 0's line per step), and the API's answers;
//   2. a trainer killed with SIGKILL shows up in the page's event timeline, and the page
//      follows the job through its restart to SUCCEEDED;
//   3. a full-page screenshot is saved (--out).
// Usage: node dashboard_test.mjs --moerun BIN --spec YAML --modules DIR --out DIR [--steps N]
//   (--steps: enough that the job is still running when the page has loaded and compared)
// Exit 0: passed; 1: failed (the reason on stderr); 77: chromium or playwright-core missing.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';

const SKIP = 77;
const DEADLINE_MS = 240_000;  // the whole test, whatever happens

function parseArgs(argv) {
  const out = { steps: '1500' };
  for (let i = 2; i < argv.length; i += 2) out[argv[i].replace(/^--/, '')] = argv[i + 1];
  for (const k of ['moerun', 'spec', 'modules', 'out']) {
    if (!out[k]) throw new Error('missing --' + k);
  }
  return out;
}

function log(...a) { console.log('[dashboard-test]', ...a); }

function fail(msg) { throw new Error(msg); }

function check(cond, msg) { if (!cond) fail(msg); }

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, fn, timeoutMs) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) fail('timed out after ' + timeoutMs + ' ms waiting for ' + what);
    await sleep(250);
  }
}

async function main() {
  const args = parseArgs(process.argv);
  const chromiumPath = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find(fs.existsSync);
  if (!chromiumPath) {
    log('SKIP: no chromium (apt install chromium)');
    return SKIP;
  }
  let chromium;
  try {
    chromium = createRequire(path.join(args.modules, 'noop.js'))('playwright-core').chromium;
  } catch (e) {
    log('SKIP: playwright-core is not installed under', args.modules, '(' + e.message + ')');
    return SKIP;
  }
  fs.mkdirSync(args.out, { recursive: true });
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'moerun-dashboard-'));

  // The job, detached into its own process group so cleanup reaches every daemon and trainer.
  // --linger: the dashboard outlives the job, so the page can be read after it ends.
  const job = spawn(args.moerun, ['local', args.spec, '--run-dir', runDir, '--steps', args.steps,
                                  '--no-progress', '--linger', '120'],
                    { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  let exitCode = null;
  job.stdout.on('data', (d) => { output += d; });
  job.stderr.on('data', (d) => { output += d; });
  job.on('exit', (code, signal) => { exitCode = code === null ? 128 + 1 : code; });
  let browser = null;
  try {
    const base = (await until('the HTTP API address', () => {
      const m = /HTTP API at (http:\/\/[^/\s]+)\/api\/status/.exec(output);
      if (!m && exitCode !== null) fail('moerun local exited with ' + exitCode + ':\n' + output);
      return m && m[1];
    }, 60_000));
    const jobId = await until('the job id', () => {
      const m = /job (\S+) submitted/.exec(output);
      return m && m[1];
    }, 60_000);
    log('job', jobId, 'at', base);
    const api = async (p) => {
      const res = await fetch(base + p);
      check(res.ok, p + ': HTTP ' + res.status);
      return res.json();
    };

    browser = await chromium.launch({ executablePath: chromiumPath, headless: true,
                                      args: ['--no-sandbox', '--disable-gpu'] });
    const page = await browser.newPage({ viewport: { width: 1400, height: 1800 } });
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(m.text()); });
    page.on('response', (r) => { if (r.status() >= 400) pageErrors.push(r.status() + ' ' + r.url()); });
    await page.goto(base + '/');
    check(await page.evaluate(() => typeof echarts !== 'undefined'),
          'the page has no charting library (was the coordinator built without npm?)');

    // 1. What the page draws is what the coordinator stored.
    await page.waitForFunction(() => window.moerun.state.metrics.length >= 20 &&
                                     window.moerun.state.metrics.some((r) => 'val_loss' in r) &&
                                     window.moerun.state.load.steps.length >= 20,
                               null, { timeout: 90_000 });
    const drawn = await page.evaluate(() => {
      const c = window.moerun.charts;
      const loss = c.loss.getOption().series;
      const heat = c.heatmap.getOption();
      return {
        jobId: window.moerun.state.jobId,
        train: loss.find((s) => s.id === 'loss').data,
        heldOut: loss.find((s) => s.id === 'val_loss').data,
        layer: window.moerun.state.layer,
        heatSteps: heat.xAxis[0].data,
        heatExperts: heat.yAxis[0].data.length,
        heat: heat.series[0].data,
      };
    });
    check(drawn.jobId === jobId, 'the page shows job ' + drawn.jobId + ', not ' + jobId);
    // The trainer's own record, independent of the coordinator (complete lines only).
    const lines = fs.readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8').split('\n');
    const written = lines.slice(0, -1).map((l) => JSON.parse(l));
    const byStep = new Map(written.map((r) => [r.step, r]));
    const stored = (await api('/api/jobs/' + jobId + '/metrics?since=0&limit=10000')).metrics;
    for (const r of stored.filter((x) => byStep.has(x.step))) {
      check(r.loss === byStep.get(r.step).loss, 'the API and metrics.jsonl disagree at ' + r.step);
    }
    check(drawn.train.length >= 20, 'only ' + drawn.train.length + ' loss points drawn');
    for (const [step, loss] of drawn.train) {
      check(byStep.has(step), 'the loss curve has step ' + step + ', which was never reported');
      check(byStep.get(step).loss === loss,
            'step ' + step + ': drawn loss ' + loss + ', reported ' + byStep.get(step).loss);
    }
    const evals = written.filter((r) => 'val_loss' in r && r.step <= drawn.train.at(-1)[0]);
    check(drawn.heldOut.length === evals.length && drawn.heldOut.length > 0,
          'held-out points: drawn ' + drawn.heldOut.length + ', reported ' + evals.length);
    evals.forEach((r, i) => check(drawn.heldOut[i][0] === r.step &&
                                  drawn.heldOut[i][1] === r.val_loss,
                                  'held-out point ' + i + ' differs from step ' + r.step));
    check(drawn.layer !== null, 'the heat map has no layer');
    let cells = 0;
    for (const [x, expert, tokens] of drawn.heat) {
      const r = byStep.get(Number(drawn.heatSteps[x]));
      check(r && r.expert_load[drawn.layer][expert] === tokens,
            'heat map cell step ' + drawn.heatSteps[x] + ' expert ' + expert + ' is ' + tokens);
      ++cells;
    }
    const experts = written[0].expert_load[drawn.layer].length;
    check(drawn.heatExperts === experts, 'heat map rows ' + drawn.heatExperts + ' != ' + experts);
    check(cells === drawn.heatSteps.length * experts, 'heat map has ' + cells + ' cells');
    check(drawn.heat.some((c) => c[2] > 0), 'every heat map cell is zero');
    const series = await api('/api/jobs/' + jobId + '/expert-load?layer=' + drawn.layer +
                             '&since=' + (Number(drawn.heatSteps[0]) - 1) + '&limit=5');
    series.steps.forEach((step, i) => check(
        JSON.stringify(series.load[i]) === JSON.stringify(byStep.get(step).expert_load[drawn.layer]),
        'the expert-load API and metrics.jsonl disagree at step ' + step));
    log('curves match', drawn.train.length, 'reports,', drawn.heldOut.length,
        'held-out points; heat map layer', drawn.layer, cells, 'cells match');

    // 2. A trainer killed for real appears in the timeline; the page follows the restart.
    const detail = await api('/api/jobs/' + jobId);
    const victim = detail.ranks.find((r) => r.rank === 1);
    check(victim && victim.pid > 0, 'no pid for rank 1: ' + JSON.stringify(detail.ranks));
    check(detail.phase === 'RUNNING',
          'the job is ' + detail.phase + ' before the kill: give it more --steps');
    process.kill(victim.pid, 'SIGKILL');
    log('killed rank 1 (pid', victim.pid + ') at step', detail.step);
    await page.waitForFunction(() => Array.from(document.querySelectorAll('#events tr.failure'))
                                         .some((tr) => /rank 1 killed by signal 9/.test(tr.textContent)),
                               null, { timeout: 60_000 });
    log('the kill is in the event timeline');
    await page.waitForFunction(() => document.getElementById('job-phase').textContent ===
                                     'SUCCEEDED', null, { timeout: 150_000 });
    const final = await api('/api/jobs/' + jobId);
    check(final.restarts >= 1 && final.generation >= 2,
          'restarts ' + final.restarts + ', generation ' + final.generation);
    // The panel settles on the final numbers once the page polls after the job ended.
    await sleep(1500);
    const panel = await page.evaluate(() => ({
      loss: document.getElementById('stat-loss').textContent,
      restarts: document.getElementById('stat-restarts').textContent,
      generation: document.getElementById('stat-generation').textContent,
      step: document.getElementById('stat-step').textContent,
      workers: document.querySelectorAll('#workers tbody tr').length,
      recovered: document.querySelectorAll('#events tr.recovered').length,
    }));
    check(panel.loss === final.loss.toFixed(4), 'panel loss ' + panel.loss + ' != ' + final.loss);
    check(panel.restarts === String(final.restarts), 'panel restarts ' + panel.restarts);
    check(panel.generation === String(final.generation), 'panel generation ' + panel.generation);
    check(panel.step === final.step + '/' + final.total_steps, 'panel step ' + panel.step);
    check(panel.workers >= 2, 'worker table has ' + panel.workers + ' rows');
    check(panel.recovered >= 1, 'no recovery row in the event timeline');
    check(pageErrors.length === 0, 'errors in the page: ' + pageErrors.join('; '));

    // 3. The picture, for people.
    const shot = path.join(args.out, 'dashboard.png');
    await page.screenshot({ path: shot, fullPage: true });
    log('screenshot', shot);
    process.kill(job.pid, 'SIGINT');  // ends the linger; the exit code is the job's
    await until('moerun local to exit', () => exitCode !== null, 60_000);
    check(exitCode === 0, 'moerun local exited with ' + exitCode + ':\n' + output.slice(-3000));
    log('PASS: job', jobId, 'generation', final.generation, 'loss', final.loss.toFixed(4));
    return 0;
  } finally {
    if (browser) await browser.close();
    if (exitCode === null) {
      try { process.kill(-job.pid, 'SIGINT'); } catch (e) { /* gone */ }
      for (let i = 0; i < 40 && exitCode === null; ++i) await sleep(250);
      try { process.kill(-job.pid, 'SIGKILL'); } catch (e) { /* gone */ }
    }
    fs.rmSync(runDir, { recursive: true, force: true });
  }
}

const watchdog = setTimeout(() => {
  console.error('[dashboard-test] FAIL: over ' + DEADLINE_MS + ' ms');
  process.exit(1);
}, DEADLINE_MS);
main().then((code) => {
  clearTimeout(watchdog);
  process.exit(code);
}, (err) => {
  clearTimeout(watchdog);
  console.error('[dashboard-test] FAIL:', err.message);
  process.exit(1);
});
