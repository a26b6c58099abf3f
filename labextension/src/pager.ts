/**
 * Pages of runs fetched on demand for the virtualized Runs list.
 */
import { ISignal, Signal } from '@lumino/signaling';

import { IRunList, IRunQuery, IRunSummary, MetricValue } from './tokens';
import { IRunFilter, NO_FILTER, pagesFor, runQuery } from './view';

/** Fetches one page of runs; `api.listRuns` in the sidebar. */
export type RunFetcher = (query: IRunQuery) => Promise<IRunList>;

/**
 * Holds the pages of the current filter and sort that have been fetched, and fetches the
 * missing ones when rows scroll into view. A new filter or sort starts over; an answer to
 * an older query is dropped.
 *
 * A page that follows one already fetched is asked for by that page's cursor: the server
 * finds it by its index instead of skipping every row before it, and it starts right after
 * the rows on show even when runs arrived in between. A page reached by a jump (the
 * scrollbar dragged far down) or refetched after a change is asked for by offset.
 */
export class RunsPager {
  /**
   * @param fetch Gets one page from the server.
   * @param pageSize Rows per request.
   */
  constructor(
    private readonly fetch: RunFetcher,
    readonly pageSize = 100
  ) {}

  /** Emitted when rows, the total or the error change. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Runs matching the query on the server, or null before the first page arrives. */
  get total(): number | null {
    return this._total;
  }

  /** Why the last fetch failed, if it did. */
  get error(): Error | null {
    return this._error;
  }

  get filter(): IRunFilter {
    return this._filter;
  }

  get sort(): string {
    return this._sort;
  }

  /** The metric whose sparklines come with each page. */
  get metric(): string {
    return this._metric;
  }

  /** A run's recent values of `metric`, if its page brought them. */
  spark(id: number): MetricValue[] | undefined {
    return this._sparklines.get(id);
  }

  /** The run at a row, if its page has arrived. */
  row(index: number): IRunSummary | undefined {
    return this._pages.get(Math.floor(index / this.pageSize))?.[index % this.pageSize];
  }

  /**
   * Start over with a new filter, sort or sparkline metric. The rows on show stay until the
   * first page of the new query replaces them all at once, so the list does not flash empty.
   */
  async query(filter: IRunFilter, sort: string, metric = this._metric): Promise<void> {
    this._filter = filter;
    this._sort = sort;
    this._metric = metric;
    this._generation++;
    this._loading.clear();
    this._replacing = true;
    // Show the new filter at once, before its rows arrive.
    this._changed.emit();
    await this._load(0, false);
  }

  /** Refetch the pages already shown (after the server announced a change). */
  async refresh(): Promise<void> {
    const shown = [...this._pages.keys()];
    this._generation++;
    this._loading.clear();
    await Promise.all((shown.length ? shown : [0]).map(page => this._load(page, true)));
  }

  /** Make sure rows `start` to `end` (exclusive) are fetched or being fetched. */
  async ensure(start: number, end: number): Promise<void> {
    const last = this._total === null ? end : Math.min(end, this._total);
    const missing = pagesFor(start, Math.max(last, start + 1), this.pageSize).filter(
      page => !this._pages.has(page) && !this._loading.has(page)
    );
    await Promise.all(missing.map(page => this._load(page, false)));
  }

  private async _load(page: number, replace: boolean): Promise<void> {
    const generation = this._generation;
    this._loading.add(page);
    try {
      const query = runQuery(
        this._filter,
        this._sort,
        page * this.pageSize,
        this.pageSize,
        this._metric
      );
      const cursor = replace ? undefined : this._cursors.get(page - 1);
      if (cursor) {
        query.offset = undefined;
        query.cursor = cursor;
      }
      const result = await this.fetch(query);
      if (generation !== this._generation) {
        return;
      }
      if (this._replacing) {
        this._replacing = false;
        this._pages.clear();
        this._cursors.clear();
        this._sparklines.clear();
      } else if (replace && page === 0) {
        // The total may have changed: drop pages beyond the new end.
        for (const key of [...this._pages.keys()]) {
          if (key * this.pageSize >= result.total) {
            this._pages.delete(key);
            this._cursors.delete(key);
          }
        }
      }
      this._pages.set(page, result.runs);
      if (result.next_cursor) {
        this._cursors.set(page, result.next_cursor);
      } else {
        this._cursors.delete(page);
      }
      for (const [id, values] of Object.entries(result.sparklines ?? {})) {
        this._sparklines.set(Number(id), values);
      }
      this._total = result.total;
      this._error = null;
    } catch (error) {
      if (generation !== this._generation) {
        return;
      }
      this._error = error instanceof Error ? error : new Error(String(error));
    } finally {
      if (generation === this._generation) {
        this._loading.delete(page);
      }
    }
    this._changed.emit();
  }

  private _filter: IRunFilter = NO_FILTER;
  private _sort = '-created_at';
  private _metric = '';
  private _sparklines = new Map<number, MetricValue[]>();
  private _pages = new Map<number, IRunSummary[]>();
  /** The server's cursor for the page after each fetched page. */
  private _cursors = new Map<number, string>();
  private _loading = new Set<number>();
  private _total: number | null = null;
  private _error: Error | null = null;
  private _generation = 0;
  private _replacing = false;
  private _changed = new Signal<this, void>(this);
}
