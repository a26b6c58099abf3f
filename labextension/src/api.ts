/**
 * The one module that speaks HTTP to the labrun server extension.
 *
 * Every request goes through `request`, which adds Jupyter's authentication (token, XSRF)
 * and turns any failure into a `ResponseError` that carries the server's own message.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import {
  IArtifact,
  ICheckedParams,
  ICheckParams,
  IComparison,
  IGpu,
  IGpuSample,
  IIdentity,
  ILogTail,
  IPoolStatus,
  IQueue,
  IReport,
  IRun,
  IRunDataset,
  IRunList,
  IRunMetrics,
  IRunQuery,
  IServerVersion,
  ISubmitJob,
  ITransition,
  IWorker
} from './tokens';

/** Where the REST API lives under the Jupyter server's base URL. */
export const API_PATH = 'labrun/api/v1';

/** A failed request: the HTTP status and the server's message (or why there was none). */
export class ResponseError extends Error {
  /**
   * @param status HTTP status, or 0 when the server could not be reached.
   * @param message What went wrong, in the server's words where it gave any.
   * @param code The server's error code (`not_found`, `invalid_request`...), when given.
   */
  constructor(
    readonly status: number,
    message: string,
    readonly code: string = ''
  ) {
    super(message);
    this.name = 'ResponseError';
  }
}

/** Query values: arrays repeat the key (`status=queued&status=running`). */
export type QueryValue = string | number | boolean | undefined | null | (string | number)[];

/** Encode a query string, leaving out empty values. */
export function encodeQuery(query: Record<string, QueryValue>): string {
  const parts: string[] = [];
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined || value === null || value === '') {
      continue;
    }
    const values = Array.isArray(value) ? value : [value];
    for (const item of values) {
      parts.push(`${encodeURIComponent(key)}=${encodeURIComponent(String(item))}`);
    }
  }
  return parts.length ? `?${parts.join('&')}` : '';
}

/** The full URL of an API path, for links (downloads) and WebSockets. */
export function apiUrl(path: string, settings = ServerConnection.makeSettings()): string {
  return URLExt.join(settings.baseUrl, API_PATH, path);
}

/** How `request` sends a body and reads the answer. */
export interface IRequestOptions {
  method?: 'GET' | 'POST' | 'PATCH' | 'DELETE';
  query?: Record<string, QueryValue>;
  body?: unknown;
  settings?: ServerConnection.ISettings;
}

/**
 * Call the labrun REST API and parse its JSON answer.
 *
 * @throws ResponseError with the server's message on any non-2xx answer, and with status 0
 *   when the server cannot be reached.
 */
export async function request<T>(path: string, options: IRequestOptions = {}): Promise<T> {
  const settings = options.settings ?? ServerConnection.makeSettings();
  const url = apiUrl(path, settings) + encodeQuery(options.query ?? {});
  const init: RequestInit = { method: options.method ?? 'GET' };
  if (options.body !== undefined) {
    init.body = JSON.stringify(options.body);
    init.headers = { 'Content-Type': 'application/json' };
  }
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ResponseError(0, `cannot reach the Jupyter server: ${String(error)}`);
  }
  const text = await response.text();
  let data: unknown = undefined;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = undefined;
    }
  }
  if (!response.ok) {
    throw errorFrom(response.status, data, text);
  }
  return data as T;
}

/** The `ResponseError` for a failed answer: labrun's `{message, code}` or Jupyter's own. */
export function errorFrom(status: number, data: unknown, text = ''): ResponseError {
  if (data && typeof data === 'object') {
    const body = data as { message?: unknown; code?: unknown; reason?: unknown };
    if (typeof body.message === 'string' && body.message) {
      return new ResponseError(status, body.message, String(body.code ?? ''));
    }
    if (typeof body.reason === 'string' && body.reason) {
      return new ResponseError(status, body.reason);
    }
  }
  const detail = text && text.length < 200 && !text.trimStart().startsWith('<') ? `: ${text}` : '';
  return new ResponseError(status, `the labrun server answered ${status}${detail}`);
}

/** The typed calls the sidebar makes. */
export const api = {
  version: () => request<IServerVersion>('version'),
  me: () => request<IIdentity>('users/me'),
  listRuns: (query: IRunQuery) =>
    request<IRunList>('runs', { query: query as Record<string, QueryValue> }),
  getRun: (id: number) => request<IRun>(`runs/${id}`),
  cancelRun: (id: number) => request<IRun>(`runs/${id}/cancel`, { method: 'POST' }),
  rerunRun: (id: number) => request<IRun>(`runs/${id}/rerun`, { method: 'POST' }),
  metrics: (id: number, maxPoints = 500) =>
    request<IRunMetrics>(`runs/${id}/metrics`, { query: { max_points: maxPoints } }),
  logs: (id: number, offset = 0) =>
    request<ILogTail>(`runs/${id}/logs`, { query: { offset, limit: 2000 } }),
  artifacts: (id: number) =>
    request<{ artifacts: IArtifact[] }>(`runs/${id}/artifacts`).then(r => r.artifacts),
  datasets: (id: number) => request<IRunDataset[]>(`runs/${id}/datasets`),
  transitions: (id: number) =>
    request<{ transitions: ITransition[] }>(`runs/${id}/transitions`).then(r => r.transitions),
  compare: (ids: number[]) => request<IComparison>('compare', { query: { runs: ids } }),
  queues: () => request<{ queues: IQueue[] }>('queues').then(r => r.queues),
  pool: () => request<IPoolStatus>('pool'),
  workers: () => request<{ workers: IWorker[] }>('workers').then(r => r.workers),
  gpus: () => request<{ gpus: IGpu[] }>('gpus').then(r => r.gpus),
  gpuHistory: (query: { since?: number; run_id?: number; max_points?: number }) =>
    request<{ samples: IGpuSample[] }>('gpus/history', { query }).then(r => r.samples),
  projects: () =>
    request<{ projects: { name: string; runs: number }[] }>('projects').then(r => r.projects),
  /** Any JSON the API serves, by path (a notebook artifact, a report's notebook). */
  json: (path: string) => request<unknown>(path),
  reports: () => request<{ reports: IReport[] }>('reports').then(r => r.reports),
  submitJob: (job: ISubmitJob) => request<IRun>('jobs', { method: 'POST', body: job }),
  /** Read a form's `name = value` lines as a job's parameters; a 400 names the bad line. */
  checkParams: (check: ICheckParams) =>
    request<ICheckedParams>('params/check', { method: 'POST', body: check })
};

/** URL that downloads one of a run's artifacts. */
export function artifactUrl(runId: number, name: string): string {
  return apiUrl(`runs/${runId}/artifacts/${name.split('/').map(encodeURIComponent).join('/')}`);
}

/** URL of a report's rendered HTML (served with a content security policy). */
export function reportUrl(reportId: number): string {
  return apiUrl(`reports/${reportId}/html`);
}
