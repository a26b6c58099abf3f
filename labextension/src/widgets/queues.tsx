/**
 * The Queues panel: each queue's queued and running jobs, cancel, and submitting the
 * current notebook as a job.
 */
import { showErrorMessage } from '@jupyterlab/apputils';
import * as React from 'react';

import { api } from '../api';
import { Empty, StatusBadge } from '../components/common';
import { LabrunContext } from '../context';
import { IDispatching, IQueue, IRunSummary, IServerEvent, ISubmitJob } from '../tokens';
import { age, canCancel, describeDispatcher, queuePositions } from '../view';
import { LivePanel } from './live';

/** The notebook a job would be made from: the one in focus. */
export interface INotebookSource {
  path: string;
  /** The notebook (nbformat 4 JSON), as a job submission sends it. */
  content: ISubmitJob['content'];
}

/** The Queues panel of the sidebar. */
export class QueuesPanel extends LivePanel {
  /**
   * @param currentNotebook The notebook in focus, or null when there is none.
   */
  constructor(
    ctx: LabrunContext,
    private readonly currentNotebook: () => INotebookSource | null
  ) {
    super(ctx);
    this.id = 'labrun-queues';
    this.title.label = 'Queues';
    this.addClass('jp-labrun-panel');
  }

  protected wants(event: IServerEvent): boolean {
    return (
      event.type.startsWith('run.created') ||
      event.type === 'run.updated' ||
      event.type === 'queue.created' ||
      event.type === 'pool.updated'
    );
  }

  protected async reload(): Promise<void> {
    try {
      const [queues, page, pool] = await Promise.all([
        api.queues(),
        api.listRuns({ status: ['queued', 'running'], sort: 'created_at', limit: 1000 }),
        api.pool()
      ]);
      this._queues = queues;
      this._dispatcher = pool.dispatcher ?? null;
      // Jobs only: tracked scripts and kernel cells run outside the queues.
      this._jobs = page.runs.filter(run => run.queue !== null && run.kind !== 'sweep');
      this._error = '';
    } catch (error) {
      this._error = (error as Error).message;
    }
    this.update();
  }

  /** Open the submit form for the notebook in focus. */
  showSubmitForm(): void {
    this._submitting = true;
    this.update();
  }

  protected renderContent(): JSX.Element {
    const positions = queuePositions(this._jobs);
    const me = this.ctx.identity;
    return (
      <div className="jp-labrun-queues">
        <div className="jp-labrun-toolbar">
          <button
            className="jp-mod-styled jp-mod-accept jp-labrun-submit-open"
            onClick={() => this.showSubmitForm()}
          >
            Submit notebook…
          </button>
        </div>
        {this._submitting && (
          <SubmitForm
            queues={this._queues}
            notebook={this.currentNotebook()}
            onDone={() => {
              this._submitting = false;
              this.scheduleReload();
            }}
          />
        )}
        {this._error && <div className="jp-labrun-error">{this._error}</div>}
        <div className="jp-labrun-dispatcher jp-labrun-muted">
          {describeDispatcher(this._dispatcher)}
        </div>
        {this._queues.map(queue => {
          const jobs = this._jobs.filter(job => job.queue === queue.name);
          return (
            <section className="jp-labrun-queue" key={queue.name} data-queue={queue.name}>
              <h3>
                {queue.name}
                <span className="jp-labrun-muted">
                  {' '}
                  priority {queue.priority} · {queue.queued} queued · {queue.running} running
                </span>
              </h3>
              {jobs.length === 0 ? (
                <Empty>empty</Empty>
              ) : (
                <table className="jp-labrun-table">
                  <thead>
                    <tr>
                      <th>#</th>
                      <th>run</th>
                      <th>status</th>
                      <th>user</th>
                      <th>GPUs</th>
                      <th>waiting</th>
                      <th />
                    </tr>
                  </thead>
                  <tbody>
                    {jobs.map(job => (
                      <tr key={job.id} data-run-id={job.id}>
                        <td>{positions.get(job.id) ?? ''}</td>
                        <td>
                          <a onClick={() => this.ctx.openRun(job.id)}>
                            {job.name ?? `run ${job.id}`}
                          </a>
                        </td>
                        <td>
                          <StatusBadge status={job.status} />
                        </td>
                        <td>{job.user}</td>
                        <td>{job.requested_gpus}</td>
                        <td>
                          {job.status === 'queued'
                            ? age(job.created_at)
                            : `ran ${age(job.started_at)}`}
                        </td>
                        <td>
                          {canCancel(job, me) && (
                            <button
                              className="jp-mod-styled jp-mod-warn jp-labrun-cancel"
                              onClick={() => void this._cancel(job)}
                            >
                              Cancel
                            </button>
                          )}
                        </td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              )}
            </section>
          );
        })}
      </div>
    );
  }

  private async _cancel(job: IRunSummary): Promise<void> {
    try {
      await api.cancelRun(job.id);
    } catch (error) {
      await showErrorMessage(`Cannot cancel run ${job.id}`, (error as Error).message);
    }
    this.scheduleReload();
  }

  private _queues: IQueue[] = [];
  private _dispatcher: IDispatching | null = null;
  private _jobs: IRunSummary[] = [];
  private _error = '';
  private _submitting = false;
}

/** The small form that queues the current notebook with parameters. */
function SubmitForm(props: {
  queues: IQueue[];
  notebook: INotebookSource | null;
  onDone: () => void;
}): JSX.Element {
  const [params, setParams] = React.useState('');
  const [gpus, setGpus] = React.useState(0);
  const [queue, setQueue] = React.useState('default');
  const [message, setMessage] = React.useState('');
  if (!props.notebook) {
    return (
      <div className="jp-labrun-form">
        <Empty>Open a notebook first: the form submits the notebook in focus.</Empty>
        <button className="jp-mod-styled" onClick={props.onDone}>
          Close
        </button>
      </div>
    );
  }
  const notebook = props.notebook;
  const submit = async () => {
    try {
      // The server reads the lines as `labrun submit -p` and %mlparams read a value, and
      // checks them against the notebook's parameters cell.
      const { parameters } = await api.checkParams({
        text: params,
        content: notebook.content
      });
      const run = await api.submitJob({
        notebook: notebook.path,
        content: notebook.content,
        parameters,
        gpus,
        queue
      });
      setMessage(`queued as run ${run.id}`);
      props.onDone();
    } catch (error) {
      setMessage((error as Error).message);
    }
  };
  return (
    <form
      className="jp-labrun-form"
      onSubmit={e => {
        e.preventDefault();
        void submit();
      }}
    >
      <div className="jp-labrun-muted">{notebook.path}</div>
      <label>
        parameters (one <code>name=value</code> per line)
        <textarea
          className="jp-labrun-params-input"
          rows={3}
          value={params}
          onChange={e => setParams(e.target.value)}
        />
      </label>
      <label>
        GPUs{' '}
        <input
          type="number"
          min={0}
          max={64}
          value={gpus}
          onChange={e => setGpus(Number(e.target.value))}
        />
      </label>
      <label>
        queue{' '}
        <select value={queue} onChange={e => setQueue(e.target.value)}>
          {props.queues.map(q => (
            <option key={q.name} value={q.name}>
              {q.name}
            </option>
          ))}
        </select>
      </label>
      <div>
        <button type="submit" className="jp-mod-styled jp-mod-accept">
          Submit
        </button>
        <button type="button" className="jp-mod-styled" onClick={props.onDone}>
          Close
        </button>
      </div>
      {message && <div className="jp-labrun-error">{message}</div>}
    </form>
  );
}
