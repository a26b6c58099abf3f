/**
 * The run detail view (main area): everything recorded about one run, kept live.
 */
import { showErrorMessage } from '@jupyterlab/apputils';
import * as React from 'react';

import { api, artifactUrl } from '../api';
import { Empty, KeyValues, LineChart, StatusBadge } from '../components/common';
import { LabrunContext } from '../context';
import {
  IArtifact,
  IGpuSample,
  ILogEntry,
  IRun,
  IRunDataset,
  IRunMetrics,
  IServerEvent,
  ITransition
} from '../tokens';
import {
  canCancel,
  formatBytes,
  formatDuration,
  machineRows,
  packageRows,
  parseServerTime
} from '../view';
import { LivePanel } from './live';

/** Log entries kept in the view; older ones are dropped from the tail. */
const LOG_TAIL = 2000;

/** One run's detail, opened from the Runs panel (`labrun:open-run`). */
export class RunDetail extends LivePanel {
  constructor(
    ctx: LabrunContext,
    readonly runId: number
  ) {
    super(ctx);
    // The main-area tab that holds this view has the id `labrun-run-${runId}`.
    this.id = `labrun-run-${runId}-content`;
    this.title.label = `Run ${runId}`;
    this.title.closable = true;
    this.addClass('jp-labrun-detail');
  }

  protected wants(event: IServerEvent): boolean {
    const data = event.data as { id?: number; run_id?: number };
    return event.type.startsWith('run.') && (data.id === this.runId || data.run_id === this.runId);
  }

  protected async reload(): Promise<void> {
    try {
      const [run, metrics, tail, artifacts, datasets, transitions, gpu] = await Promise.all([
        api.getRun(this.runId),
        api.metrics(this.runId),
        api.logs(this.runId, this._logOffset),
        api.artifacts(this.runId),
        api.datasets(this.runId),
        api.transitions(this.runId),
        api.gpuHistory({ run_id: this.runId, max_points: 500 })
      ]);
      this._run = run;
      this.title.label = run.name ? `${run.name} (#${run.id})` : `Run ${run.id}`;
      this._metrics = metrics;
      this._log = [...this._log, ...tail.entries].slice(-LOG_TAIL);
      this._logOffset = tail.next_offset;
      this._artifacts = artifacts;
      this._datasets = datasets;
      this._transitions = transitions;
      this._gpu = gpu;
      this._error = '';
    } catch (error) {
      this._error = (error as Error).message;
    }
    this.update();
  }

  protected renderContent(): JSX.Element {
    const run = this._run;
    if (!run) {
      return this._error ? (
        <div className="jp-labrun-error">{this._error}</div>
      ) : (
        <Empty>loading…</Empty>
      );
    }
    const me = this.ctx.identity;
    const notebook = this._artifacts.find(a => a.kind === 'notebook');
    const git = (run.environment.git ?? null) as Record<string, unknown> | null;
    const packages = packageRows(run.environment.packages);
    return (
      <div className="jp-labrun-detail-body">
        <header>
          <h2>{run.name ?? `run ${run.id}`}</h2>
          <StatusBadge status={run.status} />
          <span className="jp-labrun-muted">
            {' '}
            #{run.id} · {run.kind} · {run.user} · {run.project}
            {run.queue ? ` · queue ${run.queue}` : ''} · {formatDuration(run.duration)}
            {run.attempt > 1 ? ` · attempt ${run.attempt}` : ''}
          </span>
          <span className="jp-labrun-actions">
            {canCancel(run, me) && (
              <button
                className="jp-mod-styled jp-mod-warn jp-labrun-cancel"
                onClick={() => void this._act('cancel')}
              >
                Cancel
              </button>
            )}
            {(run.kind === 'notebook' || run.kind === 'cell') && (
              <button
                className="jp-mod-styled jp-labrun-rerun"
                onClick={() => void this._act('rerun')}
              >
                Re-run
              </button>
            )}
            {notebook && (
              <button
                className="jp-mod-styled jp-mod-accept jp-labrun-open-notebook"
                onClick={() =>
                  this.ctx.openNotebook(
                    `runs/${run.id}/artifacts/${notebook.name}`,
                    `run-${run.id}-${notebook.name}`
                  )
                }
              >
                Open executed notebook
              </button>
            )}
          </span>
        </header>
        {this._error && <div className="jp-labrun-error">{this._error}</div>}
        {run.error && (
          <section className="jp-labrun-run-error">
            <h3>Error</h3>
            <pre>
              {String(run.error.ename ?? '')}: {String(run.error.evalue ?? '')}
              {run.error.cell_index !== undefined ? ` (cell ${String(run.error.cell_index)})` : ''}
            </pre>
          </section>
        )}
        <div className="jp-labrun-grid">
          <section>
            <h3>Parameters</h3>
            <KeyValues rows={Object.entries(run.params)} />
          </section>
          <section>
            <h3>Datasets</h3>
            {this._datasets.length === 0 ? (
              <Empty>none recorded</Empty>
            ) : (
              <table className="jp-labrun-table">
                <tbody>
                  {this._datasets.map(d => (
                    <tr key={`${d.dataset}@${d.version}:${d.role}`}>
                      <td>{d.role}</td>
                      <td>
                        {d.dataset}@{d.version}
                      </td>
                      <td className="jp-labrun-mono">{d.content_hash.slice(0, 12)}</td>
                      <td>
                        {d.file_count} files · {formatBytes(d.size)}
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </section>
          <section>
            <h3>History</h3>
            <table className="jp-labrun-table jp-labrun-transitions">
              <tbody>
                {this._transitions.map((t, i) => (
                  <tr key={i}>
                    <td>
                      <StatusBadge status={t.status} />
                    </td>
                    <td>{new Date(parseServerTime(t.time)).toLocaleString()}</td>
                    <td>{t.message ?? ''}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </section>
        </div>
        <section>
          <h3>Metrics</h3>
          {!this._metrics || this._metrics.series.length === 0 ? (
            <Empty>no metrics logged</Empty>
          ) : (
            <div className="jp-labrun-charts">
              {this._metrics.series.map(s => (
                <LineChart
                  key={s.key}
                  title={s.key}
                  series={[{ label: s.key, xs: s.steps, ys: s.values }]}
                />
              ))}
            </div>
          )}
        </section>
        <section>
          <h3>GPU</h3>
          {this._gpu.length === 0 ? (
            <Empty>no GPU samples for this run</Empty>
          ) : (
            <div className="jp-labrun-charts">
              <LineChart
                title="utilization"
                unit="%"
                series={[
                  {
                    label: 'util',
                    xs: this._gpu.map(s => s.time),
                    ys: this._gpu.map(s => s.utilization)
                  }
                ]}
              />
              <LineChart
                title="memory used"
                series={[
                  {
                    label: 'memory',
                    xs: this._gpu.map(s => s.time),
                    ys: this._gpu.map(s =>
                      s.memory_used === null ? null : s.memory_used / 2 ** 30
                    )
                  }
                ]}
                unit=" GiB"
              />
            </div>
          )}
        </section>
        <section>
          <h3>Log</h3>
          <pre className="jp-labrun-log">
            {this._log.map(entry => (
              <span key={entry.offset} className={`jp-labrun-log-${entry.stream}`}>
                {entry.text}
              </span>
            ))}
          </pre>
        </section>
        <section>
          <h3>Artifacts</h3>
          {this._artifacts.length === 0 ? (
            <Empty>none</Empty>
          ) : (
            <ul className="jp-labrun-artifacts">
              {this._artifacts.map(a => (
                <li key={a.name}>
                  <a href={artifactUrl(run.id, a.name)} download={a.name.split('/').pop()}>
                    {a.name}
                  </a>{' '}
                  <span className="jp-labrun-muted">
                    {a.kind} · {formatBytes(a.size)}
                  </span>
                </li>
              ))}
            </ul>
          )}
        </section>
        <section>
          <h3>Environment</h3>
          {git ? (
            <div>
              <KeyValues
                rows={[
                  ['commit', git.commit],
                  ['branch', git.branch],
                  ['dirty', git.dirty]
                ]}
              />
              {git.diff ? (
                <details>
                  <summary>diff</summary>
                  <pre className="jp-labrun-diff">{String(git.diff)}</pre>
                </details>
              ) : null}
            </div>
          ) : (
            <Empty>no git state recorded</Empty>
          )}
          <details>
            <summary>{packages.length} packages</summary>
            <KeyValues rows={packages} />
          </details>
          <KeyValues rows={machineRows(run.environment)} />
        </section>
      </div>
    );
  }

  private async _act(action: 'cancel' | 'rerun'): Promise<void> {
    try {
      if (action === 'cancel') {
        await api.cancelRun(this.runId);
      } else {
        const run = await api.rerunRun(this.runId);
        this.ctx.openRun(run.id);
      }
    } catch (error) {
      await showErrorMessage(`Cannot ${action} run ${this.runId}`, (error as Error).message);
    }
    this.scheduleReload();
  }

  private _run: IRun | null = null;
  private _metrics: IRunMetrics | null = null;
  private _log: ILogEntry[] = [];
  private _logOffset = 0;
  private _artifacts: IArtifact[] = [];
  private _datasets: IRunDataset[] = [];
  private _transitions: ITransition[] = [];
  private _gpu: IGpuSample[] = [];
  private _error = '';
}
