/**
 * The shapes the labrun REST API speaks (mirrors `labrun/models.py`) and the command ids.
 */

/** The REST API version this frontend speaks; the server's `/version` must match it. */
export const API_VERSION = 1;

/** Every command the extension adds, by id. */
export namespace CommandIDs {
  export const openSidebar = 'labrun:open-sidebar';
  export const openRuns = 'labrun:open-runs';
  export const openQueues = 'labrun:open-queues';
  export const openGpus = 'labrun:open-gpus';
  export const openReports = 'labrun:open-reports';
  export const openRun = 'labrun:open-run';
  export const compareRuns = 'labrun:compare-runs';
  export const openReport = 'labrun:open-report';
  export const submitNotebook = 'labrun:submit-notebook';
}

/** A run's lifecycle states, as the server names them. */
export type RunStatus = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled' | 'lost';

/** Every status, in the order the filter offers them. */
export const RUN_STATUSES: RunStatus[] = [
  'queued',
  'running',
  'completed',
  'failed',
  'cancelled',
  'lost'
];

/** Statuses a run can still leave. */
export const ACTIVE_STATUSES: RunStatus[] = ['queued', 'running'];

/** One row of the runs list. */
export interface IRunSummary {
  id: number;
  project: string;
  name: string | null;
  kind: 'script' | 'cell' | 'notebook' | 'sweep' | 'session';
  status: RunStatus;
  user: string;
  queue: string | null;
  requested_gpus: number;
  worker: string | null;
  attempt: number;
  parent_id: number | null;
  tags: string[];
  created_at: string;
  started_at: string | null;
  ended_at: string | null;
  duration: number | null;
  params: Record<string, unknown>;
  metrics: Record<string, MetricValue>;
}

/** Everything about one run. */
export interface IRun extends IRunSummary {
  source: string | null;
  notebook: string | null;
  environment: Record<string, unknown>;
  error: Record<string, unknown> | null;
  devices: number[] | null;
}

/** A page of runs. */
export interface IRunList {
  runs: IRunSummary[];
  total: number;
  offset: number;
  limit: number;
  /** Asks for the next page (as `cursor`); null after the last page. */
  next_cursor?: string | null;
  /** Each run's recent values of the `spark` metric, keyed by run id. */
  sparklines?: Record<string, MetricValue[]>;
}

/** What the runs list asks the server for. */
export interface IRunQuery {
  project?: string;
  status?: RunStatus[];
  user?: string;
  q?: string;
  sort?: string;
  offset?: number;
  /** The `next_cursor` of the page before: the page after it, without an offset. */
  cursor?: string;
  limit?: number;
  parent_id?: number;
  /** A metric whose recent values come back as `sparklines`. */
  spark?: string;
}

/** One metric's points. */
export interface IMetricSeries {
  key: string;
  steps: number[];
  values: MetricValue[];
  times: number[];
}

/** A value JSON has no number for, as the server writes it (a loss that became NaN). */
export type NonFinite = 'NaN' | 'Infinity' | '-Infinity';

/** A metric value: a number, one of the non-finite strings, or null (none logged). */
export type MetricValue = number | NonFinite | null;

/** A run's metrics. */
export interface IRunMetrics {
  run_id: number;
  series: IMetricSeries[];
}

/** One line (or chunk) of a run's log. */
export interface ILogEntry {
  offset: number;
  stream: string;
  text: string;
  time: string;
  /** The attempt that wrote it (null for lines older than attempts). */
  attempt?: number | null;
}

/** Log entries after an offset, and where to continue. */
export interface ILogTail {
  entries: ILogEntry[];
  next_offset: number;
}

/** A file a run stored. */
export interface IArtifact {
  name: string;
  size: number;
  sha256: string;
  content_type: string;
  kind: string;
  created_at: string;
}

/** A dataset version a run used or wrote. */
export interface IRunDataset {
  dataset: string;
  version: string;
  content_hash: string;
  role: string;
  size: number;
  file_count: number;
}

/** A status change with its time. */
export interface ITransition {
  status: RunStatus;
  time: string;
  message: string | null;
}

/** A named queue and its counts. */
export interface IQueue {
  name: string;
  priority: number;
  max_gpus_per_user: number | null;
  description: string;
  queued: number;
  running: number;
}

/** A pool worker. */
export interface IWorker {
  id: string;
  host: string;
  address: string;
  resources: Record<string, number>;
  gpus: { index: number; name?: string; memory_total?: number }[];
  status: string;
  alive: boolean;
  started_at: string;
  last_heartbeat: string;
  runs: number[];
  nthreads: number;
  /** Its latest CPU and memory sample, null before the first. */
  telemetry?: IHostTelemetry | null;
}

/** A worker's latest host sample. */
export interface IHostTelemetry {
  time: number;
  cpu_percent: number | null;
  ram_used: number | null;
  ram_total: number | null;
}

/** A GPU's latest sample and who holds it. */
export interface IGpu {
  worker_id: string;
  index: number;
  name: string;
  time: number | null;
  utilization: number | null;
  memory_used: number | null;
  memory_total: number | null;
  temperature: number | null;
  power: number | null;
  run_id: number | null;
  user: string | null;
  idle: boolean;
}

/** One GPU telemetry sample. */
export interface IGpuSample {
  worker_id: string;
  gpu_index: number;
  time: number;
  utilization: number | null;
  memory_used: number | null;
  memory_total: number | null;
  run_id: number | null;
}

/** Runs side by side: one row per parameter or metric. */
export interface IComparison {
  runs: IRunSummary[];
  params: { key: string; values: unknown[]; differs: boolean }[];
  metrics: { key: string; values: MetricValue[]; differs: boolean }[];
}

/** A rendered report notebook. */
export interface IReport {
  id: number;
  name: string;
  notebook: string;
  params: Record<string, unknown>;
  run_id: number | null;
  user: string;
  created_at: string;
  has_html: boolean;
  has_notebook: boolean;
}

/** The server's labrun version and API version. */
export interface IServerVersion {
  version: string;
  api: number;
}

/** Who the browser is signed in as. */
export interface IIdentity {
  user: string;
  admin: boolean;
}

/** A notebook job to queue. */
export interface ISubmitJob {
  /** The notebook's path, as the user knows it. */
  notebook: string;
  /** The notebook itself (nbformat 4 JSON). */
  content: unknown;
  parameters: Record<string, unknown>;
  gpus: number;
  cwd?: string;
  queue?: string;
  project?: string;
  name?: string;
}

/** `name = value` lines for the server to read as a job's parameters. */
export interface ICheckParams {
  text: string;
  /** The notebook (nbformat 4 JSON) whose parameters cell the values are checked against. */
  content?: unknown;
}

/** The values the server read. */
export interface ICheckedParams {
  parameters: Record<string, unknown>;
}

/** One message of the server's event stream. */
export interface IServerEvent {
  type: string;
  time: number;
  data: Record<string, unknown>;
}
