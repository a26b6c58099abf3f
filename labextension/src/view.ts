/**
 * The view logic of the panels, kept free of React and the DOM so it can be tested alone.
 */
import { ResponseError } from './api';
import {
  IDispatching,
  API_VERSION,
  IGpu,
  IIdentity,
  IRunQuery,
  IRunSummary,
  IServerVersion,
  MetricValue,
  RunStatus
} from './tokens';

/** What the Runs panel's filter bar holds. */
export interface IRunFilter {
  project: string;
  statuses: RunStatus[];
  user: string;
  text: string;
}

/** An empty filter: every run of every project. */
export const NO_FILTER: IRunFilter = { project: '', statuses: [], user: '', text: '' };

/** The query for one page of runs under a filter and sort. */
export function runQuery(
  filter: IRunFilter,
  sort: string,
  offset: number,
  limit: number,
  spark = ''
): IRunQuery {
  return {
    project: filter.project || undefined,
    status: filter.statuses.length ? filter.statuses : undefined,
    user: filter.user || undefined,
    q: filter.text.trim() || undefined,
    sort,
    offset,
    limit,
    spark: spark || undefined
  };
}

/**
 * The sort after a click on a column's header: a new column sorts descending first,
 * the same column flips direction.
 */
export function nextSort(current: string, column: string): string {
  const field = current.replace(/^[-+]/, '');
  if (field !== column) {
    return `-${column}`;
  }
  return current.startsWith('-') ? column : `-${column}`;
}

/** The direction a column is sorted in, if it is the sort column. */
export function sortDirection(sort: string, column: string): 'asc' | 'desc' | null {
  if (sort.replace(/^[-+]/, '') !== column) {
    return null;
  }
  return sort.startsWith('-') ? 'desc' : 'asc';
}

/** Rows to render for a scroll position: the visible ones plus `overscan` either side. */
export function visibleRange(
  scrollTop: number,
  viewportHeight: number,
  rowHeight: number,
  total: number,
  overscan = 8
): { start: number; end: number } {
  const first = Math.floor(Math.max(0, scrollTop) / rowHeight);
  const count = Math.ceil(Math.max(0, viewportHeight) / rowHeight);
  const start = Math.max(0, first - overscan);
  const end = Math.min(total, first + count + overscan);
  return { start, end: Math.max(start, end) };
}

/** The page numbers that hold rows `start` to `end` (exclusive). */
export function pagesFor(start: number, end: number, pageSize: number): number[] {
  if (end <= start) {
    return [];
  }
  const pages: number[] = [];
  for (let page = Math.floor(start / pageSize); page * pageSize < end; page++) {
    pages.push(page);
  }
  return pages;
}

/** "1h 02m", "3m 05s", "42s", or an em dash when there is no duration. */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) {
    return '—';
  }
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = s % 60;
  if (h > 0) {
    return `${h}h ${String(m).padStart(2, '0')}m`;
  }
  if (m > 0) {
    return `${m}m ${String(rest).padStart(2, '0')}s`;
  }
  return `${rest}s`;
}

/** Bytes in the largest unit that keeps the number above one: "1.5 GiB". */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined) {
    return '—';
  }
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/** A metric value with four significant digits, or an em dash. */
export function formatValue(value: unknown): string {
  if (value === null || value === undefined) {
    return '—';
  }
  if (typeof value === 'number') {
    if (Number.isInteger(value)) {
      return String(value);
    }
    return Math.abs(value) >= 1e-3 && Math.abs(value) < 1e6
      ? String(Number(value.toPrecision(4)))
      : value.toExponential(3);
  }
  if (typeof value === 'string') {
    return value;
  }
  return JSON.stringify(value);
}

/** A metric value: as formatValue, and NaN and the infinities as NaN, ∞ and -∞. */
export function formatMetric(value: MetricValue | undefined): string {
  if (value === 'NaN' || (typeof value === 'number' && Number.isNaN(value))) {
    return 'NaN';
  }
  if (value === 'Infinity' || value === Infinity) {
    return '∞';
  }
  if (value === '-Infinity' || value === -Infinity) {
    return '-∞';
  }
  return formatValue(value);
}

/** Whether a metric value can be drawn: a finite number (NaN and ±∞ break a line). */
export function plottable(value: MetricValue | undefined): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}

/**
 * A run's parameters as one short line: those named by `keys` (in that order) where it has
 * any of them, else its first `count`: "lr=0.01 epochs=3".
 */
export function keyParams(
  params: Record<string, unknown>,
  count = 3,
  keys: string[] | null = null
): string {
  const named = (keys ?? []).filter(key => key in params).map(key => [key, params[key]] as const);
  const entries = named.length ? named : Object.entries(params);
  return entries
    .slice(0, count)
    .map(([key, value]) => `${key}=${formatValue(value)}`)
    .join(' ');
}

/**
 * The parameters whose values differ among `runs` (in the order the runs first name them),
 * so a sweep over lr and hidden shows `lr` and `hidden`, not the constants it shares. Only
 * the runs that have a parameter count: a sweep's report run, listed with the sweep, does
 * not make `epochs` differ by lacking it. Null when nothing differs (one run, or all
 * alike): then each row shows its first parameters.
 */
export function differingParams(runs: Pick<IRunSummary, 'params'>[]): string[] | null {
  const values = new Map<string, Set<string>>();
  for (const run of runs) {
    for (const [key, value] of Object.entries(run.params)) {
      values.set(key, (values.get(key) ?? new Set()).add(JSON.stringify(value)));
    }
  }
  const differs = [...values.entries()].filter(([, seen]) => seen.size > 1).map(([key]) => key);
  return differs.length ? differs : null;
}

/**
 * The metric the Runs panel shows when the user has not picked one here: the one picked
 * last (remembered in the settings), else the sweep's target metric, else the first; each
 * only if the listed runs have it.
 */
export function defaultMetric(keys: string[], saved: string, target: string | null): string {
  for (const choice of [saved, target]) {
    if (choice && keys.includes(choice)) {
      return choice;
    }
  }
  return keys[0] ?? '';
}

/**
 * The metric a sweep is judged on, if the listed runs say: a sweep, or a report over one,
 * run with a `target` parameter (as `notebooks/sweep_report.ipynb` takes).
 */
export function sweepTarget(runs: Pick<IRunSummary, 'kind' | 'params'>[]): string | null {
  for (const run of runs) {
    const target = run.params.target;
    if (typeof target === 'string' && (run.kind === 'sweep' || 'sweep' in run.params)) {
      return target;
    }
  }
  return null;
}

/** Seconds since an ISO time, as "5s", "3m", "2h" or "4d". */
export function age(iso: string | null, now = Date.now()): string {
  if (!iso) {
    return '—';
  }
  const seconds = Math.max(0, (now - parseServerTime(iso)) / 1000);
  if (seconds < 60) {
    return `${Math.round(seconds)}s`;
  }
  if (seconds < 3600) {
    return `${Math.floor(seconds / 60)}m`;
  }
  if (seconds < 86400) {
    return `${Math.floor(seconds / 3600)}h`;
  }
  return `${Math.floor(seconds / 86400)}d`;
}

/** The server's times are UTC; some come without a zone suffix. */
export function parseServerTime(iso: string): number {
  return Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : `${iso}Z`);
}

/**
 * An SVG path through `values`, scaled into a `width` by `height` box (y grows downwards).
 * Missing and non-finite values break the line.
 */
export function sparklinePath(values: MetricValue[], width: number, height: number): string {
  const finite = values.filter(plottable);
  if (finite.length === 0) {
    return '';
  }
  const min = Math.min(...finite);
  const max = Math.max(...finite);
  const span = max - min || 1;
  const step = values.length > 1 ? width / (values.length - 1) : 0;
  let path = '';
  let pen = false;
  values.forEach((value, i) => {
    if (!plottable(value)) {
      pen = false;
      return;
    }
    const x = values.length > 1 ? i * step : width / 2;
    const y = max === min ? height / 2 : height - ((value - min) / span) * height;
    path += `${pen ? 'L' : 'M'}${round(x)},${round(y)}`;
    pen = true;
  });
  return path;
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}

/** Several series on shared axes: each `{x, y}` list becomes a path in one box. */
export function chartPaths(
  series: { xs: number[]; ys: MetricValue[] }[],
  width: number,
  height: number
): { paths: string[]; xRange: [number, number]; yRange: [number, number] } {
  const xs = series.flatMap(s => s.xs);
  const ys = series.flatMap(s => s.ys.filter(plottable));
  if (xs.length === 0 || ys.length === 0) {
    return { paths: series.map(() => ''), xRange: [0, 0], yRange: [0, 0] };
  }
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const sx = (x: number) => (x1 === x0 ? width / 2 : ((x - x0) / (x1 - x0)) * width);
  const sy = (y: number) => (y1 === y0 ? height / 2 : height - ((y - y0) / (y1 - y0)) * height);
  const paths = series.map(s => {
    let path = '';
    let pen = false;
    s.xs.forEach((x, i) => {
      const y = s.ys[i];
      if (!plottable(y)) {
        pen = false;
        return;
      }
      path += `${pen ? 'L' : 'M'}${round(sx(x))},${round(sy(y))}`;
      pen = true;
    });
    return path;
  });
  return { paths, xRange: [x0, x1], yRange: [y0, y1] };
}

/** Each queued run's place in line within its queue, oldest first (1 is next). */
export function queuePositions(runs: IRunSummary[]): Map<number, number> {
  const byQueue = new Map<string, IRunSummary[]>();
  for (const run of runs) {
    if (run.status !== 'queued') {
      continue;
    }
    const queue = run.queue ?? '';
    byQueue.set(queue, [...(byQueue.get(queue) ?? []), run]);
  }
  const positions = new Map<number, number>();
  for (const queued of byQueue.values()) {
    queued
      .sort((a, b) => parseServerTime(a.created_at) - parseServerTime(b.created_at) || a.id - b.id)
      .forEach((run, i) => positions.set(run.id, i + 1));
  }
  return positions;
}

/**
 * Whether the signed-in user may cancel a run: their own, those of the projects they lead,
 * or anyone's for an admin (the server's rule, labrun.jupyter_ext.roles).
 */
export function canCancel(run: IRunSummary, me: IIdentity): boolean {
  return (
    (run.status === 'queued' || run.status === 'running') &&
    (me.admin || run.user === me.user || me.leads.includes(run.project))
  );
}

/** GPUs grouped by worker, each worker's sorted by index. */
export function gpusByWorker(gpus: IGpu[]): Map<string, IGpu[]> {
  const grouped = new Map<string, IGpu[]>();
  for (const gpu of gpus) {
    grouped.set(gpu.worker_id, [...(grouped.get(gpu.worker_id) ?? []), gpu]);
  }
  for (const list of grouped.values()) {
    list.sort((a, b) => a.index - b.index);
  }
  return new Map([...grouped.entries()].sort(([a], [b]) => a.localeCompare(b)));
}

/**
 * What the GPUs panel says in place of its GPU counts when the pool has no GPUs at all
 * (null when it has some): plainly that there are none, and how many workers run on CPU.
 */
export function noGpus(workers: number, gpus: number): string | null {
  if (gpus > 0) {
    return null;
  }
  if (workers === 0) {
    return 'No GPUs: no live workers.';
  }
  return `No GPUs in this pool: ${workers} worker${workers === 1 ? '' : 's'}, CPU only.`;
}

/** A percentage (0–100) of memory used, or null when the total is unknown. */
export function memoryPercent(gpu: Pick<IGpu, 'memory_used' | 'memory_total'>): number | null {
  if (!gpu.memory_total || gpu.memory_used === null) {
    return null;
  }
  return Math.min(100, (100 * gpu.memory_used) / gpu.memory_total);
}

/**
 * Why the panels cannot talk to the server, with the fix; null when they can.
 *
 * @param version The server's `/version` answer, when it gave one.
 * @param error What the `/version` request threw, when it failed.
 */
export function serverProblem(version: IServerVersion | null, error: unknown): string | null {
  if (error instanceof ResponseError) {
    if (error.status === 404) {
      return (
        'The labrun server extension is not running in this Jupyter server. ' +
        'Install it with `pip install "labrun[all]"`, check that ' +
        '`jupyter server extension list` shows labrun enabled, then restart JupyterLab.'
      );
    }
    if (error.status === 403) {
      return 'The Jupyter server refused the request: sign in to JupyterLab again and reload.';
    }
    return `The labrun server extension failed: ${error.message}`;
  }
  if (error) {
    return `The labrun server extension failed: ${String(error)}`;
  }
  if (version && version.api < API_VERSION) {
    return (
      `The labrun server extension (${version.version}) is older than this sidebar ` +
      `(API ${version.api}, needs ${API_VERSION}). Upgrade it with ` +
      '`pip install -U "labrun[all]"` and restart JupyterLab.'
    );
  }
  if (version && version.api > API_VERSION) {
    return (
      `The labrun server extension (${version.version}) is newer than this sidebar. ` +
      'Rebuild or reinstall the labextension to match (`pip install -U "labrun[all]"`), ' +
      'then reload the page.'
    );
  }
  return null;
}

/**
 * A run's installed packages as name and version rows. They are recorded as a list of
 * `name==version` strings (an object of name to version is read as such).
 */
export function packageRows(packages: unknown): [string, unknown][] {
  if (Array.isArray(packages)) {
    return packages.map(item => {
      const text = String(item);
      const at = text.indexOf('==');
      return at < 0 ? [text, ''] : [text.slice(0, at), text.slice(at + 2)];
    });
  }
  if (packages !== null && typeof packages === 'object') {
    return Object.entries(packages as Record<string, unknown>);
  }
  return [];
}

/**
 * What a run ran on, as rows: Python, OS, torch and CUDA, the GPUs it held, the host, the
 * notebook, and the run it re-ran. A `%%mlrun` cell and a notebook job record the same keys.
 */
export function machineRows(environment: Record<string, unknown>): [string, unknown][] {
  const versions = (environment.versions ?? {}) as Record<string, unknown>;
  const gpus = (Array.isArray(environment.gpus) ? environment.gpus : []) as Record<
    string,
    unknown
  >[];
  const rows: [string, unknown][] = [];
  const add = (key: string, value: unknown) => {
    if (value !== undefined && value !== null && value !== '') {
      rows.push([key, value]);
    }
  };
  add('python', environment.python ?? versions.python);
  add('platform', environment.platform ?? versions.os);
  add('torch', versions.torch);
  add('cuda', versions.cuda);
  add(
    'gpus',
    gpus
      .map(gpu => `${gpu.index}: ${gpu.name}${gpu.driver ? ` (driver ${gpu.driver})` : ''}`)
      .join(', ')
  );
  add('hostname', environment.hostname);
  add('notebook', environment.notebook);
  add('rerun of', environment.rerun_of);
  return rows;
}

/** Which server dispatches the store's jobs (the scheduler of record), in one line. */
export function describeDispatcher(dispatcher: IDispatching | null, now = Date.now()): string {
  if (!dispatcher) {
    return 'No server dispatches jobs now; another takes over within seconds.';
  }
  const who = dispatcher.this_server
    ? 'this server'
    : `${dispatcher.user ?? 'another user'}'s server at ${dispatcher.url ?? dispatcher.server}`;
  const since = new Date(dispatcher.since * 1000).toISOString();
  return `Dispatching: ${who}, for ${age(since, now)}`;
}
