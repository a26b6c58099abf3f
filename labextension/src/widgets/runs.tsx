/**
 * The Runs panel: every run of the project, filtered, sorted, fetched page by page.
 */
import { ISignal, Signal } from '@lumino/signaling';
import * as React from 'react';

import { api } from '../api';
import { RunsView } from '../components/runs';
import { LabrunContext } from '../context';
import { RunsPager } from '../pager';
import { IRunSummary, IServerEvent } from '../tokens';
import { IRunFilter, defaultMetric, nextSort, sweepTarget } from '../view';
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

  /**
   * The metric picked last, as the settings remember it; the list shows it unless the user
   * picked another here since.
   */
  setSavedMetric(metric: string): void {
    this._savedMetric = metric;
    if (!this._picked) {
      this._showDefaultMetric();
    }
  }

  /** Emitted with the metric the user picks, for the settings to remember. */
  get metricPicked(): ISignal<this, string> {
    return this._metricPicked;
  }

  /** Apply a new filter; the first page of the result is fetched at once. */
  async setFilter(filter: IRunFilter): Promise<void> {
    await this.pager.query(filter, this.pager.sort);
  }

  protected wants(event: IServerEvent): boolean {
    if (event.type === 'run.created') {
      // A run in a project the filter does not offer yet: read the projects again. Not on
      // every event: counting a million runs' projects takes the database a while.
      const project = event.data.project;
      if (typeof project === 'string' && !this._projects.includes(project)) {
        this._projectsStale = true;
      }
    }
    return event.type === 'run.created' || event.type === 'run.updated';
  }

  protected async reload(): Promise<void> {
    if (!this._started) {
      this._started = true;
      await this.pager.query(this.pager.filter, this.pager.sort);
    } else {
      await this.pager.refresh();
    }
    if (this._projectsStale) {
      try {
        this._projects = (await api.projects()).map(p => p.name);
        this._projectsStale = false;
      } catch {
        // The list still works without the project names; the next reload tries again.
      }
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
        onMetric={metric => this._pick(metric)}
        onToggle={id => this._toggle(id)}
        onOpen={run => this.ctx.openRun(run.id)}
        onCompare={() => this.ctx.compareRuns([...this._selected])}
      />
    );
  }

  private _onPage(): void {
    // Offer every metric the loaded runs have.
    const keys = new Set(this._metricKeys);
    const listed: IRunSummary[] = [];
    for (let i = 0; i < Math.min(this.pager.total ?? 0, this.pager.pageSize); i++) {
      const run = this.pager.row(i);
      if (run) {
        listed.push(run);
        Object.keys(run.metrics).forEach(key => keys.add(key));
      }
    }
    this._target = this._target ?? sweepTarget(listed);
    if (keys.size !== this._metricKeys.length) {
      this._metricKeys = [...keys].sort();
      if (!this._picked) {
        this._showDefaultMetric();
      }
    }
    this.update();
  }

  /** Show the default metric (see `defaultMetric`) unless it is on show already. */
  private _showDefaultMetric(): void {
    const metric = defaultMetric(this._metricKeys, this._savedMetric, this._target);
    if (metric !== this.pager.metric) {
      void this.pager.query(this.pager.filter, this.pager.sort, metric);
    }
  }

  private _pick(metric: string): void {
    this._picked = true;
    this._metricPicked.emit(metric);
    void this.pager.query(this.pager.filter, this.pager.sort, metric);
  }

  private _toggle(id: number): void {
    if (this._selected.has(id)) {
      this._selected.delete(id);
    } else {
      this._selected.add(id);
    }
    this.update();
  }

  private _picked = false;
  private _savedMetric = '';
  private _target: string | null = null;
  private _metricPicked = new Signal<this, string>(this);
  private _started = false;
  private _projects: string[] = [];
  private _projectsStale = true;
  private _metricKeys: string[] = [];
  private _selected = new Set<number>();
}
