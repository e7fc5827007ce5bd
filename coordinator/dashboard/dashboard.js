// The coordinator's dashboard: polls the JSON API (docs/observability.md) once a second and
// draws what it returns. Nothing here computes a metric; every number comes from the API.
// Exposes window.moerun {state, charts} so tests and curious users can read what is drawn.
'use strict';

const POLL_MS = 1000;
const HEATMAP_STEPS = 500;  // the newest reports the heat map shows
const MAX_POINTS = 20000;   // kept in the page; older ones thin out like the store's

const state = {
  jobId: null,      // the job shown
  metrics: [],      // its step reports, ascending by step
  lastStep: 0,      // the newest step in `metrics`
  layer: null,      // MoE layer of the heat map
  load: { layer: null, steps: [], load: [] },  // its newest HEATMAP_STEPS steps
  ranks: [],        // every rank's newest step split (from the job's detail)
  eventsShown: -1,  // rows in the events table
  generation: 0,    // the job's generation the series belong to
  epoch: 0,         // bumped by every switch of job: answers for an older one are dropped
};
const charts = {};
window.moerun = { state, charts };

const $ = (id) => document.getElementById(id);

async function getJson(path) {
  const res = await fetch(path, { cache: 'no-store' });
  if (!res.ok) throw new Error(path + ': HTTP ' + res.status);
  return res.json();
}

function fmt(x, digits) {
  if (x === undefined || x === null || Number.isNaN(x)) return '–';
  return Number(x).toFixed(digits);
}

function fmtCount(x) {
  if (x === undefined || x === null) return '–';
  return Math.round(x).toLocaleString('en-US');
}

function fmtDuration(s) {
  if (s === undefined || s === null || !Number.isFinite(s)) return '–';
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  if (h > 0) return h + 'h' + String(m).padStart(2, '0') + 'm';
  if (m > 0) return m + 'm' + String(sec).padStart(2, '0') + 's';
  return sec + 's';
}

function fmtTime(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString('en-GB', { hour12: false }) + '.' +
         String(d.getMilliseconds()).padStart(3, '0');
}

function cell(row, text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) {
    const span = document.createElement('span');
    span.className = 'pill ' + cls;
    span.textContent = text;
    td.textContent = '';
    td.appendChild(span);
  }
  row.appendChild(td);
}

// ---- charts ----------------------------------------------------------------------------------

function lineChart(id, series, yName) {
  const c = echarts.init($(id));
  c.setOption({
    animation: false,
    grid: { left: 56, right: 16, top: 30, bottom: 30 },
    tooltip: { trigger: 'axis' },
    legend: { top: 0 },
    xAxis: { type: 'value', name: 'step', nameLocation: 'end', minInterval: 1 },
    yAxis: { type: 'value', name: yName, scale: true },
    series: series.map((s) => Object.assign(
        { type: 'line', showSymbol: false, data: [] }, s)),
  });
  return c;
}

function makeCharts() {
  if (typeof echarts === 'undefined') {
    $('no-charts').hidden = false;
    return;
  }
  charts.loss = lineChart('loss-chart', [
    { name: 'train', id: 'loss' },
    { name: 'held-out', id: 'val_loss', showSymbol: true, symbolSize: 6 },
    { name: 'MTP', id: 'mtp_loss' },
  ], 'loss');
  charts.throughput = lineChart('throughput-chart', [{ name: 'tokens/s', id: 'tokens_per_s' }],
                                'tokens/s');
  charts.split = lineChart('split-chart', [
    { name: 'compute', id: 'compute_s', stack: 't', areaStyle: {} },
    { name: 'data-plane wait', id: 'data_wait_s', stack: 't', areaStyle: {} },
    { name: 'pipeline bubble', id: 'bubble_s', stack: 't', areaStyle: {} },
  ], 'seconds');
  charts.ranks = echarts.init($('rank-chart'));
  charts.ranks.setOption({
    animation: false,
    grid: { left: 56, right: 16, top: 30, bottom: 30 },
    tooltip: { trigger: 'axis', axisPointer: { type: 'shadow' } },
    legend: { top: 0 },
    xAxis: { type: 'category', name: 'rank', data: [] },
    yAxis: { type: 'value', name: 'seconds' },
    series: ['compute', 'data-plane wait', 'pipeline bubble'].map((name) => (
        { name, type: 'bar', stack: 't', data: [] })),
  });
  charts.heatmap = echarts.init($('heatmap-chart'));
  charts.heatmap.setOption({
    animation: false,
    grid: { left: 56, right: 90, top: 10, bottom: 40 },
    tooltip: {
      formatter: (p) => 'step ' + p.name + ', expert ' + p.value[1] + ': ' +
                        fmtCount(p.value[2]) + ' tokens',
    },
    xAxis: { type: 'category', name: 'step', nameLocation: 'middle', nameGap: 26, data: [] },
    yAxis: { type: 'category', name: 'expert', data: [] },
    visualMap: { min: 0, max: 1, calculable: true, orient: 'vertical', right: 0, top: 'center',
                 inRange: { color: ['#f7fbff', '#6baed6', '#08306b'] } },
    series: [{ type: 'heatmap', id: 'load', data: [] }],
  });
  window.addEventListener('resize', () => Object.values(charts).forEach((c) => c.resize()));
}

function drawCharts() {
  if (!charts.loss) return;
  const m = state.metrics;
  const pick = (key) => m.filter((r) => typeof r[key] === 'number').map((r) => [r.step, r[key]]);
  charts.loss.setOption({ series: [{ id: 'loss', data: pick('loss') },
                                   { id: 'val_loss', data: pick('val_loss') },
                                   { id: 'mtp_loss', data: pick('mtp_loss') }] });
  charts.throughput.setOption({ series: [{ id: 'tokens_per_s', data: pick('tokens_per_s') }] });
  charts.split.setOption({ series: [{ id: 'compute_s', data: pick('compute_s') },
                                    { id: 'data_wait_s', data: pick('data_wait_s') },
                                    { id: 'bubble_s', data: pick('bubble_s') }] });
  const ranks = state.ranks;
  charts.ranks.setOption({
    // A straggler's rank is labelled with a '!' (docs/cluster.md, "Stragglers").
    xAxis: { data: ranks.map((r) => String(r.rank) + (r.straggler ? ' !' : '')) },
    series: [{ data: ranks.map((r) => r.compute_s) }, { data: ranks.map((r) => r.data_wait_s) },
             { data: ranks.map((r) => r.bubble_s) }],
  });
}

function layersOf(reports) {
  const last = reports.length ? reports[reports.length - 1] : null;
  return ((last && last.expert_layers) || []).slice().sort((a, b) => a - b);
}

// The heat map's layer follows the select; its series is fetched in drawHeatmap's caller.
function syncLayers() {
  const layers = layersOf(state.metrics);
  const select = $('layer-select');
  if (select.options.length !== layers.length) {
    select.replaceChildren(...layers.map((l) => new Option(l, l)));
    if (state.layer === null || !layers.includes(state.layer)) state.layer = layers[0] || null;
    if (state.layer !== null) select.value = state.layer;
  }
}

// New steps of the shown layer's load (GET /api/jobs/<id>/expert-load), the newest kept.
async function fetchLoad(id, epoch) {
  if (state.layer === null) return false;
  if (state.load.layer !== state.layer) {
    state.load = { layer: state.layer, steps: [], load: [] };
  }
  const layer = state.layer;
  const since = state.load.steps.length ? state.load.steps[state.load.steps.length - 1]
                                        : Math.max(0, state.lastStep - HEATMAP_STEPS);
  const page = await getJson('/api/jobs/' + id + '/expert-load?layer=' +
                             encodeURIComponent(layer) + '&since=' + since +
                             '&limit=' + HEATMAP_STEPS);
  // Dropped when the job or the layer changed while the answer was on its way.
  if (epoch !== state.epoch || layer !== state.layer || state.load.layer !== layer ||
      page.steps.length === 0) {
    return false;
  }
  state.load.steps = state.load.steps.concat(page.steps).slice(-HEATMAP_STEPS);
  state.load.load = state.load.load.concat(page.load).slice(-HEATMAP_STEPS);
  return true;
}

function drawHeatmap() {
  if (!charts.heatmap) return;
  const { steps, load } = state.load;
  const experts = load.length ? load[load.length - 1].length : 0;
  const data = [];
  let max = 1;
  load.forEach((counts, x) => counts.forEach((n, e) => {
    data.push([x, e, n]);
    if (n > max) max = n;
  }));
  charts.heatmap.setOption({
    xAxis: { data: steps.map(String) },
    yAxis: { data: Array.from({ length: experts }, (_, e) => String(e)) },
    visualMap: { max },
    series: [{ id: 'load', data }],
  });
}

// ---- tables and the job panel ----------------------------------------------------------------

function drawWorkers(workers) {
  const body = $('workers').tBodies[0];
  body.replaceChildren(...workers.map((w) => {
    const tr = document.createElement('tr');
    tr.dataset.worker = w.worker;
    if (w.health !== 'ok') tr.className = 'unhealthy';
    cell(tr, w.worker);
    cell(tr, w.host);
    cell(tr, w.health, w.health);
    cell(tr, w.heartbeat_age_ms >= 0 ? (w.heartbeat_age_ms / 1000).toFixed(1) + ' s' : '–');
    cell(tr, w.used + '/' + w.devices);
    cell(tr, String(w.trainers));
    cell(tr, String(w.trainer_failures));
    cell(tr, w.backend);
    return tr;
  }));
}

function drawEvents(events) {
  if (events.length === state.eventsShown) return;
  state.eventsShown = events.length;
  const body = $('events').tBodies[0];
  body.replaceChildren(...events.slice().reverse().map((ev) => {
    const tr = document.createElement('tr');
    if (ev.to === 'RECOVERING' || ev.to === 'FAILED') tr.className = 'failure';
    else if (ev.from === 'RECOVERING') tr.className = 'recovered';
    cell(tr, fmtTime(ev.time_ms));
    cell(tr, String(ev.generation));
    cell(tr, ev.from + ' → ' + ev.to);
    cell(tr, ev.cause);
    cell(tr, ev.rank >= 0 ? String(ev.rank) : '');
    cell(tr, ev.host || '');
    return tr;
  }));
}

function drawJob(job) {
  $('job-title').textContent = job.job_id + (job.name ? ' · ' + job.name : '');
  const phase = $('job-phase');
  phase.textContent = job.phase;
  phase.className = 'pill ' + job.phase;
  // A job with no room to start or restart says what it waits for (and for how long).
  const waiting = $('job-waiting');
  waiting.hidden = typeof job.waiting_for !== 'string';
  waiting.textContent = waiting.hidden ? '' :
    job.waiting_for + ' · ' + fmtDuration(job.waiting_s);
  const total = job.total_steps || 0;
  $('job-progress-bar').style.width = (total ? 100 * job.step / total : 0).toFixed(1) + '%';
  $('stat-step').textContent = job.step + '/' + total;
  $('stat-loss').textContent = fmt(job.loss, 4);
  $('stat-val-loss').textContent = fmt(job.val_loss, 4);
  $('stat-mtp-box').hidden = typeof job.mtp_loss !== 'number';
  $('stat-mtp-loss').textContent = fmt(job.mtp_loss, 4);
  $('stat-tokens').textContent = fmtCount(job.tokens_per_s);
  $('stat-eta').textContent = job.phase === 'RUNNING' ? fmtDuration(job.eta_s) : '–';
  $('stat-generation').textContent = String(job.generation);
  $('stat-restarts').textContent = String(job.restarts);
  $('stat-committed').textContent = job.committed_step > 0 ? 'step ' + job.committed_step : '–';
}

function drawJobList(jobs) {
  const select = $('job-select');
  const ids = jobs.map((j) => j.job_id);
  const current = Array.from(select.options).map((o) => o.value);
  if (ids.join() !== current.join()) {
    select.replaceChildren(...jobs.map((j) => new Option(j.job_id + ' (' + j.name + ')', j.job_id)));
  }
  if (state.jobId === null || !ids.includes(state.jobId)) {
    const fromHash = new URLSearchParams(location.hash.slice(1)).get('job');
    const running = jobs.filter((j) => j.phase === 'RUNNING');
    const pick = ids.includes(fromHash) ? fromHash
               : running.length ? running[running.length - 1].job_id
               : ids[ids.length - 1];
    if (pick !== undefined) showJob(pick);
  }
  if (state.jobId !== null) select.value = state.jobId;
}

function showJob(id) {
  state.epoch += 1;
  state.jobId = id;
  state.generation = 0;
  state.metrics = [];
  state.lastStep = 0;
  state.layer = null;
  state.load = { layer: null, steps: [], load: [] };
  state.ranks = [];
  state.eventsShown = -1;
  $('layer-select').replaceChildren();
  history.replaceState(null, '', '#job=' + encodeURIComponent(id));
}

function thin(reports) {
  if (reports.length <= MAX_POINTS) return reports;
  const half = Math.floor(reports.length / 2);
  return reports.slice(0, half).filter((r, i) => i % 2 === 0).concat(reports.slice(half));
}

// ---- polling ---------------------------------------------------------------------------------

async function poll() {
  const conn = $('connection');
  try {
    const status = await getJson('/api/status');
    drawJobList(status.jobs);
    drawWorkers(status.workers);
    if (state.jobId !== null) {
      const epoch = state.epoch;  // every await below may return to a different job shown
      const id = encodeURIComponent(state.jobId);
      const job = await getJson('/api/jobs/' + id);
      if (epoch !== state.epoch) throw new Error('switched');
      // A restart resumes from a checkpoint and the coordinator drops the reports after it:
      // a new generation reloads the series.
      if (job.generation !== state.generation) {
        state.generation = job.generation;
        state.metrics = [];
        state.lastStep = 0;
        state.load = { layer: null, steps: [], load: [] };
        drawHeatmap();
      }
      state.ranks = job.ranks || [];
      drawJob(job);
      let grew = false;
      for (;;) {
        const page = await getJson('/api/jobs/' + id + '/metrics?since=' + state.lastStep +
                                   '&limit=5000');
        if (epoch !== state.epoch) throw new Error('switched');
        if (page.metrics.length === 0) break;
        state.metrics = thin(state.metrics.concat(page.metrics));
        state.lastStep = page.metrics[page.metrics.length - 1].step;
        grew = true;
        if (page.metrics.length < 5000) break;
      }
      if (grew || state.metrics.length === 0) drawCharts();
      syncLayers();
      if (await fetchLoad(id, epoch)) drawHeatmap();
      const events = (await getJson('/api/jobs/' + id + '/events')).events;
      if (epoch !== state.epoch) throw new Error('switched');
      drawEvents(events);
    }
    conn.textContent = 'live';
    conn.className = 'pill live';
  } catch (err) {
    if (err.message !== 'switched') {  // a job switch mid-poll is not an outage
      conn.textContent = 'offline: ' + err.message;
      conn.className = 'pill offline';
    }
  }
  setTimeout(poll, POLL_MS);
}

$('job-select').addEventListener('change', (ev) => {
  showJob(ev.target.value);
  drawCharts();
  drawHeatmap();
});
$('layer-select').addEventListener('change', (ev) => {
  state.layer = ev.target.value;  // the next poll fetches its series
});
makeCharts();
poll();
