/**
 * The shapes the labrun REST API speaks and the command ids.
 *
 * The shapes are the generated types of `api-types.ts` (openapi-typescript over the OpenAPI
 * document the server serves, `make api-types`) under the names the sidebar uses; `make
 * api-types-check` fails when they drift from `labrun/models.py`.
 */
import type { components, operations } from './api-types';

type Schemas = components['schemas'];

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
export type RunStatus = Schemas['RunStatus'];

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
export type IRunSummary = Schemas['RunSummary'];

/** Everything about one run. */
export type IRun = Schemas['DescribeRun'];

/** A page of runs (`next_cursor` asks for the next page; `sparklines`: the `spark` metric's
 * recent values, keyed by run id). */
export type IRunList = Schemas['RunList'];

/** What the runs list asks the server for. */
export type IRunQuery = NonNullable<operations['getRuns']['parameters']['query']>;

/** One metric's points. */
export type IMetricSeries = Schemas['MetricSeries'];

/** A value JSON has no number for, as the server writes it (a loss that became NaN). */
export type NonFinite = 'NaN' | 'Infinity' | '-Infinity';

/** A metric value: a number, one of the non-finite strings, or null (none logged). */
export type MetricValue = number | NonFinite | null;

/** A run's metrics. */
export type IRunMetrics = Schemas['RunMetrics'];

/** One line (or chunk) of a run's log. */
export type ILogEntry = Schemas['LogEntry'];

/** Log entries after an offset, and where to continue. */
export type ILogTail = Schemas['LogTail'];

/** A file a run stored. */
export type IArtifact = Schemas['DescribeArtifact'];

/** A dataset version a run used or wrote: the version, and the run's role for it. */
export type IRunDataset = Schemas['DescribeDatasetVersion'] & Pick<Schemas['LinkDataset'], 'role'>;

/** A status change with its time. */
export type ITransition = Schemas['RunTransitionOut'];

/** A named queue and its counts. */
export type IQueue = Schemas['DescribeQueue'];

/** The pool's state: its workers, its queue, and the server that dispatches. */
export type IPoolStatus = Schemas['PoolStatus'];

/** The scheduler of record: the one server of the store that dispatches jobs. */
export type IDispatching = Schemas['Dispatching'];

/** A pool worker. */
export type IWorker = Schemas['DescribeWorker'];

/** A worker's latest host sample. */
export type IHostTelemetry = Schemas['HostTelemetry'];

/** A GPU's latest sample and who holds it. */
export type IGpu = Schemas['DescribeGpu'];

/** One GPU telemetry sample, as `gpus/history` sends it back: the model a worker posts
 * samples with, every field present. */
export type IGpuSample = Required<Schemas['GpuSampleIn']>;

/** Runs side by side: one row per parameter or metric. */
export type IComparison = Schemas['Comparison'];

/** A rendered report notebook. */
export type IReport = Schemas['DescribeReport'];

/** The server's labrun version and API version. */
export type IServerVersion = Schemas['ServerVersion'];

/** Who the browser is signed in as. */
export type IIdentity = Schemas['Identity'];

/** A notebook job to queue. */
export type ISubmitJob = Schemas['SubmitJob'];

/** `name = value` lines for the server to read as a job's parameters (and check against the
 * notebook in `content`). */
export type ICheckParams = Schemas['CheckParams'];

/** The values the server read. */
export type ICheckedParams = Schemas['CheckedParams'];

/** One message of the server's event stream. */
export interface IServerEvent {
  type: string;
  time: number;
  data: Record<string, unknown>;
}
