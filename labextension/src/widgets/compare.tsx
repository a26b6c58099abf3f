/**
 * Runs side by side (main area): parameters with differences highlighted, and each
 * metric's curves overlaid.
 */
import * as React from 'react';

import { api } from '../api';
import { Empty, IChartSeries, LineChart, StatusBadge } from '../components/common';
import { LabrunContext } from '../context';
import { IComparison, IRunMetrics, IServerEvent } from '../tokens';
import { formatMetric, formatValue } from '../view';
import { LivePanel } from './live';

/** The comparison of two or more runs (`labrun:compare-runs`). */
/** The id of the main-area tab comparing these runs: one tab per set of runs. */
export function compareId(runIds: number[]): string {
  return `labrun-compare-${runIds.join('-')}`;
}

export class CompareView extends LivePanel {
  constructor(
    ctx: LabrunContext,
    readonly runIds: number[]
  ) {
    super(ctx);
    this.id = `${compareId(runIds)}-content`;
    this.title.label = `Compare ${runIds.map(id => `#${id}`).join(' ')}`;
    this.title.closable = true;
    this.addClass('jp-labrun-compare-view');
  }

  protected wants(event: IServerEvent): boolean {
    const data = event.data as { id?: number; run_id?: number };
    const id = data.id ?? data.run_id;
    return (
      (event.type === 'run.updated' || event.type === 'run.metrics') &&
      id !== undefined &&
      this.runIds.includes(id)
    );
  }

  protected async reload(): Promise<void> {
    try {
      const [comparison, ...metrics] = await Promise.all([
        api.compare(this.runIds),
        ...this.runIds.map(id => api.metrics(id, 300))
      ]);
      this._comparison = comparison;
      this._metrics = metrics as IRunMetrics[];
      this._error = '';
    } catch (error) {
      this._error = (error as Error).message;
    }
    this.update();
  }

  protected renderContent(): JSX.Element {
    const comparison = this._comparison;
    if (!comparison) {
      return this._error ? (
        <div className="jp-labrun-error">{this._error}</div>
      ) : (
        <Empty>loading…</Empty>
      );
    }
    const keys = [...new Set(this._metrics.flatMap(m => m.series.map(s => s.key)))].sort();
    return (
      <div className="jp-labrun-compare-body">
        {this._error && <div className="jp-labrun-error">{this._error}</div>}
        <table className="jp-labrun-table jp-labrun-compare-table">
          <thead>
            <tr>
              <th />
              {comparison.runs.map(run => (
                <th key={run.id}>
                  <a onClick={() => this.ctx.openRun(run.id)}>{run.name ?? `run ${run.id}`}</a>{' '}
                  <StatusBadge status={run.status} />
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            <CompareSection
              title="parameters"
              rows={comparison.params}
              width={comparison.runs.length}
              format={formatValue}
            />
            <CompareSection
              title="metrics (latest)"
              rows={comparison.metrics}
              width={comparison.runs.length}
              format={formatMetric}
            />
          </tbody>
        </table>
        <div className="jp-labrun-charts">
          {keys.map(key => {
            const series: IChartSeries[] = [];
            this._metrics.forEach((m, i) => {
              const s = m.series.find(x => x.key === key);
              if (s) {
                const run = comparison.runs[i];
                series.push({ label: run?.name ?? `run ${m.run_id}`, xs: s.steps, ys: s.values });
              }
            });
            return <LineChart key={key} title={key} series={series} width={420} height={160} />;
          })}
        </div>
      </div>
    );
  }

  private _comparison: IComparison | null = null;
  private _metrics: IRunMetrics[] = [];
  private _error = '';
}

/** One section of the comparison: a row per key, highlighted where the runs differ. */
function CompareSection<T>(props: {
  title: string;
  rows: { key: string; values: T[]; differs: boolean }[];
  width: number;
  format: (value: T) => string;
}): JSX.Element {
  return (
    <>
      <tr className="jp-labrun-compare-section">
        <th colSpan={props.width + 1}>{props.title}</th>
      </tr>
      {props.rows.map(row => (
        <tr key={row.key} className={row.differs ? 'jp-labrun-differs' : ''} data-key={row.key}>
          <th>{row.key}</th>
          {row.values.map((value, i) => (
            <td key={i}>{props.format(value)}</td>
          ))}
        </tr>
      ))}
    </>
  );
}
