/**
 * The Runs panel: every run of the project, filtered, sorted, fetched page by page.
 */
import * as React from 'react';

import { api } from '../api';
import { RunsView } from '../components/runs';
import { LabrunContext } from '../context';
import { RunsPager } from '../pager';
import { IServerEvent } from '../tokens';
import { IRunFilter, nextSort } from '../view';
import { LivePanel } from './live';

/** The Runs panel of the sidebar. */
export class RunsPanel extends LivePanel {
  constructor(ctx: LabrunContext) {
    super(ctx);
    this.id = 'labrun-runs';
    this.title.label = 'Runs';
    this.addClass('jp-labrun-panel');
    this.pager = new RunsPager(api.listRuns);
    this.pager.changed.connect(this._onPage, this);
  }

  /** The pages of runs on show. */
  readonly pager: RunsPager;

  /** Apply a new filter; the first page of the result is fetched at once. */
  async setFilter(filter: IRunFilter): Promise<void> {
    await this.pager.query(filter, this.pager.sort);
  }

  protected wants(event: IServerEvent): boolean {
    return event.type === 'run.created' || event.type === 'run.updated';
  }

  protected async reload(): Promise<void> {
    if (!this._started) {
      this._started = true;
      await this.pager.query(this.pager.filter, this.pager.sort);
    } else {
      await this.pager.refresh();
    }
    try {
      this._projects = (await api.projects()).map(p => p.name);
    } catch {
      // The list still works without the project names; the next reload tries again.
    }
    this.update();
  }

  protected renderContent(): JSX.Element {
    return (
      <RunsView
        pager={this.pager}
        projects={this._projects}
        metric={this.pager.metric}
        metricKeys={this._metricKeys}
        selected={this._selected}
        onFilter={update => void this.setFilter(update(this.pager.filter))}
        onSort={column =>
          void this.pager.query(this.pager.filter, nextSort(this.pager.sort, column))
        }
        onMetric={metric => void this.pager.query(this.pager.filter, this.pager.sort, metric)}
        onToggle={id => this._toggle(id)}
        onOpen={run => this.ctx.openRun(run.id)}
        onCompare={() => this.ctx.compareRuns([...this._selected])}
      />
    );
  }

  private _onPage(): void {
    // Offer every metric the loaded runs have; pick the first as the default.
    const keys = new Set(this._metricKeys);
    for (let i = 0; i < Math.min(this.pager.total ?? 0, this.pager.pageSize); i++) {
      for (const key of Object.keys(this.pager.row(i)?.metrics ?? {})) {
        keys.add(key);
      }
    }
    if (keys.size !== this._metricKeys.length) {
      this._metricKeys = [...keys].sort();
      if (!this.pager.metric && this._metricKeys.length) {
        void this.pager.query(this.pager.filter, this.pager.sort, this._metricKeys[0]);
      }
    }
    this.update();
  }

  private _toggle(id: number): void {
    if (this._selected.has(id)) {
      this._selected.delete(id);
    } else {
      this._selected.add(id);
    }
    this.update();
  }

  private _started = false;
  private _projects: string[] = [];
  private _metricKeys: string[] = [];
  private _selected = new Set<number>();
}
