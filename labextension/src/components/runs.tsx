/**
 * The Runs panel's view: a filter bar, sortable column headers and a virtualized list.
 */
import * as React from 'react';

import { RunsPager } from '../pager';
import { IRunSummary, MetricValue, RUN_STATUSES, RunStatus } from '../tokens';
import {
  IRunFilter,
  differingParams,
  formatDuration,
  formatMetric,
  keyParams,
  sortDirection,
  visibleRange
} from '../view';
import { Empty, Sparkline, StatusBadge } from './common';

/** Height of one row in pixels; the list positions rows by it. */
export const ROW_HEIGHT = 26;

/** A sortable column: its header and the server's sort key. */
interface IColumn {
  label: string;
  sort: string | null;
  className: string;
}

/** Everything the Runs view shows and the callbacks that change it. */
export interface IRunsViewProps {
  pager: RunsPager;
  projects: string[];
  metric: string;
  metricKeys: string[];
  selected: Set<number>;
  /** Change the filter; the update applies to the newest filter, not the rendered one. */
  onFilter: (update: (filter: IRunFilter) => IRunFilter) => void;
  onSort: (column: string) => void;
  onMetric: (metric: string) => void;
  onToggle: (id: number) => void;
  onOpen: (run: IRunSummary) => void;
  onCompare: () => void;
}

/** The Runs panel. */
export function RunsView(props: IRunsViewProps): JSX.Element {
  const { pager } = props;
  const [scrollTop, setScrollTop] = React.useState(0);
  const [height, setHeight] = React.useState(400);
  const body = React.useRef<HTMLDivElement>(null);

  React.useEffect(() => {
    const node = body.current;
    if (!node) {
      return;
    }
    const observer = new ResizeObserver(() => setHeight(node.clientHeight));
    observer.observe(node);
    setHeight(node.clientHeight);
    return () => observer.disconnect();
  }, []);

  const total = pager.total ?? 0;
  const { start, end } = visibleRange(scrollTop, height, ROW_HEIGHT, total);
  React.useEffect(() => {
    void pager.ensure(start, end);
  }, [pager, start, end, pager.filter, pager.sort]);

  // The parameters that tell the listed runs apart (of the first page: what a glance sees).
  const listed: IRunSummary[] = [];
  for (let index = 0; index < Math.min(total, pager.pageSize); index++) {
    const run = pager.row(index);
    if (run) {
      listed.push(run);
    }
  }
  const paramKeys = differingParams(listed);
  const sortParam = paramKeys?.[0] ?? Object.keys(listed[0]?.params ?? {})[0];

  const columns: IColumn[] = [
    { label: '', sort: null, className: 'jp-labrun-col-select' },
    { label: '#', sort: 'id', className: 'jp-labrun-col-id' },
    { label: 'Name', sort: 'name', className: 'jp-labrun-col-name' },
    { label: 'Status', sort: 'status', className: 'jp-labrun-col-status' },
    { label: 'User', sort: 'user', className: 'jp-labrun-col-user' },
    { label: 'Queue', sort: 'queue', className: 'jp-labrun-col-queue' },
    { label: 'Duration', sort: 'duration', className: 'jp-labrun-col-duration' },
    {
      label: 'Params',
      sort: sortParam ? `params.${sortParam}` : null,
      className: 'jp-labrun-col-params'
    },
    {
      label: props.metric || 'Metric',
      sort: props.metric ? `metrics.${props.metric}` : null,
      className: 'jp-labrun-col-metric'
    }
  ];

  const rows: JSX.Element[] = [];
  for (let index = start; index < end; index++) {
    const run = pager.row(index);
    rows.push(
      <RunRow
        key={run ? run.id : `loading-${index}`}
        index={index}
        run={run}
        metric={props.metric}
        paramKeys={paramKeys}
        spark={run ? pager.spark(run.id) : undefined}
        selected={run ? props.selected.has(run.id) : false}
        onToggle={props.onToggle}
        onOpen={props.onOpen}
      />
    );
  }

  return (
    <div className="jp-labrun-runs">
      <FilterBar filter={pager.filter} projects={props.projects} onFilter={props.onFilter} />
      <div className="jp-labrun-toolbar">
        <span className="jp-labrun-count">
          {pager.total === null ? 'loading…' : `${pager.total} run${pager.total === 1 ? '' : 's'}`}
        </span>
        <label>
          metric{' '}
          <select
            className="jp-labrun-metric-select"
            value={props.metric}
            onChange={e => props.onMetric(e.target.value)}
          >
            {props.metricKeys.length === 0 && <option value="">none</option>}
            {props.metricKeys.map(key => (
              <option key={key} value={key}>
                {key}
              </option>
            ))}
          </select>
        </label>
        <button
          className="jp-mod-styled jp-mod-accept jp-labrun-compare"
          disabled={props.selected.size < 2}
          onClick={props.onCompare}
          title="Select two or more runs to compare them"
        >
          Compare{props.selected.size ? ` (${props.selected.size})` : ''}
        </button>
      </div>
      {pager.error && <div className="jp-labrun-error">{pager.error.message}</div>}
      <div className="jp-labrun-table-scroll" role="table" aria-label="runs">
        <div className="jp-labrun-row jp-labrun-header" role="row">
          {columns.map(column => (
            <HeaderCell
              key={column.className}
              column={column}
              sort={pager.sort}
              onSort={props.onSort}
            />
          ))}
        </div>
        <div
          className="jp-labrun-body"
          ref={body}
          onScroll={e => setScrollTop(e.currentTarget.scrollTop)}
          role="rowgroup"
        >
          {pager.total === 0 ? (
            <Empty>
              No runs match. Track one with `labrun.init()`, `%%mlrun` or `labrun submit`.
            </Empty>
          ) : (
            <div className="jp-labrun-spacer" style={{ height: total * ROW_HEIGHT }}>
              {rows}
            </div>
          )}
        </div>
      </div>
    </div>
  );
}

function HeaderCell(props: {
  column: IColumn;
  sort: string;
  onSort: (column: string) => void;
}): JSX.Element {
  const { column } = props;
  const direction = column.sort ? sortDirection(props.sort, column.sort) : null;
  const arrow = direction === 'asc' ? ' ▲' : direction === 'desc' ? ' ▼' : '';
  const sortKey = column.sort;
  return (
    <span
      className={`jp-labrun-cell ${column.className}${sortKey ? ' jp-labrun-sortable' : ''}`}
      role="columnheader"
      aria-sort={direction === 'asc' ? 'ascending' : direction === 'desc' ? 'descending' : 'none'}
      onClick={sortKey ? () => props.onSort(sortKey) : undefined}
    >
      {column.label}
      {arrow}
    </span>
  );
}

function RunRow(props: {
  index: number;
  run: IRunSummary | undefined;
  metric: string;
  paramKeys: string[] | null;
  spark: MetricValue[] | undefined;
  selected: boolean;
  onToggle: (id: number) => void;
  onOpen: (run: IRunSummary) => void;
}): JSX.Element {
  const { run } = props;
  const style = { top: props.index * ROW_HEIGHT, height: ROW_HEIGHT };
  if (!run) {
    return <div className="jp-labrun-row jp-labrun-row-loading" style={style} />;
  }
  return (
    <div
      className={`jp-labrun-row${props.selected ? ' jp-mod-selected' : ''}`}
      style={style}
      role="row"
      data-run-id={run.id}
      onClick={() => props.onOpen(run)}
    >
      <span className="jp-labrun-cell jp-labrun-col-select" onClick={e => e.stopPropagation()}>
        <input
          type="checkbox"
          aria-label={`select run ${run.id}`}
          checked={props.selected}
          onChange={() => props.onToggle(run.id)}
        />
      </span>
      <span className="jp-labrun-cell jp-labrun-col-id">{run.id}</span>
      <span className="jp-labrun-cell jp-labrun-col-name" title={run.name ?? ''}>
        {run.name ?? `run ${run.id}`}
      </span>
      <span className="jp-labrun-cell jp-labrun-col-status">
        <StatusBadge status={run.status} />
      </span>
      <span className="jp-labrun-cell jp-labrun-col-user">{run.user}</span>
      <span className="jp-labrun-cell jp-labrun-col-queue">{run.queue ?? ''}</span>
      <span className="jp-labrun-cell jp-labrun-col-duration">{formatDuration(run.duration)}</span>
      <span className="jp-labrun-cell jp-labrun-col-params" title={keyParams(run.params, 20)}>
        {keyParams(run.params, 3, props.paramKeys)}
      </span>
      <span className="jp-labrun-cell jp-labrun-col-metric">
        {props.spark && <Sparkline values={props.spark} />}
        <span className="jp-labrun-metric-value">
          {props.metric ? formatMetric(run.metrics[props.metric]) : ''}
        </span>
      </span>
    </div>
  );
}

function FilterBar(props: {
  filter: IRunFilter;
  projects: string[];
  onFilter: (update: (filter: IRunFilter) => IRunFilter) => void;
}): JSX.Element {
  const { filter, onFilter } = props;
  const toggle = (status: RunStatus) =>
    onFilter(f => ({
      ...f,
      statuses: f.statuses.includes(status)
        ? f.statuses.filter(s => s !== status)
        : [...f.statuses, status]
    }));
  return (
    <div className="jp-labrun-filters">
      <input
        className="jp-labrun-search"
        type="search"
        placeholder="Filter by name"
        aria-label="filter runs by name"
        value={filter.text}
        onChange={e => {
          const text = e.target.value;
          onFilter(f => ({ ...f, text }));
        }}
      />
      <select
        className="jp-labrun-project"
        aria-label="project"
        value={filter.project}
        onChange={e => {
          const project = e.target.value;
          onFilter(f => ({ ...f, project }));
        }}
      >
        <option value="">all projects</option>
        {props.projects.map(project => (
          <option key={project} value={project}>
            {project}
          </option>
        ))}
      </select>
      <input
        className="jp-labrun-user"
        type="search"
        placeholder="user"
        aria-label="filter runs by user"
        value={filter.user}
        onChange={e => {
          const user = e.target.value;
          onFilter(f => ({ ...f, user }));
        }}
      />
      <span className="jp-labrun-status-filter" role="group" aria-label="status">
        {RUN_STATUSES.map(status => (
          <button
            key={status}
            className={`jp-labrun-chip${filter.statuses.includes(status) ? ' jp-mod-active' : ''}`}
            aria-pressed={filter.statuses.includes(status)}
            data-status={status}
            onClick={() => toggle(status)}
          >
            {status}
          </button>
        ))}
      </span>
    </div>
  );
}
