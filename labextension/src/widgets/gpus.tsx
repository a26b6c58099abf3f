/**
 * The GPUs panel: every worker and GPU of the pool, live, with who holds what and which
 * GPUs sit idle.
 */
import * as React from 'react';

import { api } from '../api';
import { Bar, Empty, Sparkline } from '../components/common';
import { LabrunContext } from '../context';
import { IGpu, IGpuSample, IServerEvent, IWorker } from '../tokens';
import { formatBytes, gpusByWorker, memoryPercent, noGpus } from '../view';
import { LivePanel } from './live';

/** Seconds of history each GPU card shows. */
const HISTORY_SECONDS = 300;

/** The GPUs panel of the sidebar. */
export class GpusPanel extends LivePanel {
  constructor(ctx: LabrunContext) {
    super(ctx);
    this.id = 'labrun-gpus';
    this.title.label = 'GPUs';
    this.addClass('jp-labrun-panel');
  }

  protected wants(event: IServerEvent): boolean {
    return event.type === 'gpus.sampled' || event.type === 'worker.updated';
  }

  protected async reload(): Promise<void> {
    try {
      const [workers, gpus, samples] = await Promise.all([
        api.workers(),
        api.gpus(),
        api.gpuHistory({ since: Date.now() / 1000 - HISTORY_SECONDS, max_points: 2000 })
      ]);
      this._workers = workers.filter(worker => worker.alive);
      this._gpus = gpus;
      this._history = new Map();
      for (const sample of samples) {
        const key = `${sample.worker_id}/${sample.gpu_index}`;
        this._history.set(key, [...(this._history.get(key) ?? []), sample]);
      }
      this._error = '';
    } catch (error) {
      this._error = (error as Error).message;
    }
    this.update();
  }

  protected renderContent(): JSX.Element {
    const byWorker = gpusByWorker(this._gpus);
    const idle = this._gpus.filter(gpu => gpu.idle);
    return (
      <div className="jp-labrun-gpus">
        {this._error && <div className="jp-labrun-error">{this._error}</div>}
        <div className="jp-labrun-summary">
          {noGpus(this._workers.length, this._gpus.length) ?? (
            <>
              {this._gpus.length} GPUs on {this._workers.length} workers ·{' '}
              {this._gpus.length - idle.length} busy ·{' '}
              <span className={idle.length ? 'jp-labrun-idle' : ''}>{idle.length} idle</span>
            </>
          )}
        </div>
        {this._workers.length === 0 && (
          <Empty>No live workers. The server starts a local pool; `labrun pool` shows it.</Empty>
        )}
        {this._workers.map(worker => (
          <section className="jp-labrun-worker" key={worker.id} data-worker={worker.id}>
            <h3 title={worker.address}>
              {worker.host || worker.id}
              <span className="jp-labrun-muted">
                {' '}
                {worker.address || worker.id} ·{' '}
                {worker.runs.length ? `runs ${worker.runs.join(', ')}` : 'no runs'}
              </span>
            </h3>
            <HostBars worker={worker} />
            {(byWorker.get(worker.id) ?? []).map(gpu => (
              <GpuCard
                key={gpu.index}
                gpu={gpu}
                history={this._history.get(`${gpu.worker_id}/${gpu.index}`) ?? []}
                onOpenRun={id => this.ctx.openRun(id)}
              />
            ))}
          </section>
        ))}
      </div>
    );
  }

  private _workers: IWorker[] = [];
  private _gpus: IGpu[] = [];
  private _history = new Map<string, IGpuSample[]>();
  private _error = '';
}

/** A worker's CPU and memory, from its latest host sample. */
function HostBars(props: { worker: IWorker }): JSX.Element {
  const sample = props.worker.telemetry;
  const cpu = sample?.cpu_percent ?? null;
  const memory = memoryPercent({
    memory_used: sample?.ram_used ?? null,
    memory_total: sample?.ram_total ?? null
  });
  return (
    <div className="jp-labrun-host">
      <Bar label="cpu" percent={cpu} text={cpu === null ? '—' : `${Math.round(cpu)}%`} />
      <Bar
        label="ram"
        percent={memory}
        text={`${formatBytes(sample?.ram_used)} / ${formatBytes(sample?.ram_total)}`}
      />
    </div>
  );
}

function GpuCard(props: {
  gpu: IGpu;
  history: IGpuSample[];
  onOpenRun: (id: number) => void;
}): JSX.Element {
  const { gpu } = props;
  const memory = memoryPercent(gpu);
  return (
    <div
      className={`jp-labrun-gpu${gpu.idle ? ' jp-labrun-gpu-idle' : ''}`}
      data-gpu={`${gpu.worker_id}/${gpu.index}`}
    >
      <div className="jp-labrun-gpu-head">
        <span>
          GPU {gpu.index} <span className="jp-labrun-muted">{gpu.name}</span>
        </span>
        {gpu.run_id !== null ? (
          <a className="jp-labrun-holder" onClick={() => props.onOpenRun(gpu.run_id as number)}>
            run {gpu.run_id} · {gpu.user ?? '?'}
          </a>
        ) : (
          <span className="jp-labrun-idle">idle</span>
        )}
      </div>
      <Bar
        label="util"
        percent={gpu.utilization}
        text={gpu.utilization === null ? '—' : `${Math.round(gpu.utilization)}%`}
      />
      <Bar
        label="mem"
        percent={memory}
        text={`${formatBytes(gpu.memory_used)} / ${formatBytes(gpu.memory_total)}`}
      />
      <div className="jp-labrun-gpu-history" title="utilization, last 5 minutes">
        <Sparkline values={props.history.map(s => s.utilization)} width={160} height={20} />
        {gpu.temperature !== null && <span>{Math.round(gpu.temperature)}°C</span>}
        {gpu.power !== null && <span>{Math.round(gpu.power)} W</span>}
      </div>
    </div>
  );
}
