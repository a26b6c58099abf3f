/**
 * Small building blocks shared by the panels. Every user-provided string is rendered as a
 * React text node, never as HTML.
 */
import * as React from 'react';

import { MetricValue, RunStatus } from '../tokens';
import { chartPaths, formatValue, sparklinePath } from '../view';

/** A run's status as a coloured badge. */
export function StatusBadge(props: { status: RunStatus }): JSX.Element {
  return (
    <span className={`jp-labrun-status jp-labrun-status-${props.status}`} title={props.status}>
      {props.status}
    </span>
  );
}

/** A tiny line of a metric's recent values. */
export function Sparkline(props: {
  values: MetricValue[];
  width?: number;
  height?: number;
}): JSX.Element | null {
  const width = props.width ?? 48;
  const height = props.height ?? 14;
  const path = sparklinePath(props.values, width, height);
  if (!path) {
    return null;
  }
  return (
    <svg className="jp-labrun-sparkline" width={width} height={height} aria-hidden="true">
      <path d={path} />
    </svg>
  );
}

/** One coloured series of a line chart. */
export interface IChartSeries {
  label: string;
  xs: number[];
  ys: MetricValue[];
}

/** Series drawn on shared axes, with a legend; used for metrics and GPU history. */
export function LineChart(props: {
  title: string;
  series: IChartSeries[];
  width?: number;
  height?: number;
  unit?: string;
}): JSX.Element {
  const width = props.width ?? 320;
  const height = props.height ?? 120;
  const { paths, xRange, yRange } = chartPaths(props.series, width, height);
  return (
    <figure className="jp-labrun-chart" data-title={props.title}>
      <figcaption>
        {props.title}
        <span className="jp-labrun-chart-range">
          {formatValue(yRange[0])}–{formatValue(yRange[1])}
          {props.unit ?? ''} · x {formatValue(xRange[0])}–{formatValue(xRange[1])}
        </span>
      </figcaption>
      <svg width={width} height={height} viewBox={`0 0 ${width} ${height}`} role="img">
        {paths.map((d, i) => (
          <path key={i} d={d} className={`jp-labrun-series jp-labrun-series-${i % 8}`} />
        ))}
      </svg>
      {props.series.length > 1 && (
        <ul className="jp-labrun-legend">
          {props.series.map((s, i) => (
            <li key={i} className={`jp-labrun-series-${i % 8}`}>
              {s.label}
            </li>
          ))}
        </ul>
      )}
    </figure>
  );
}

/** A horizontal bar for a percentage, with its label. */
export function Bar(props: { label: string; percent: number | null; text: string }): JSX.Element {
  const percent = props.percent ?? 0;
  const level = percent >= 80 ? 'high' : percent >= 30 ? 'mid' : 'low';
  return (
    <div className="jp-labrun-bar" title={`${props.label}: ${props.text}`}>
      <span className="jp-labrun-bar-label">{props.label}</span>
      <span className="jp-labrun-bar-track">
        <span
          className={`jp-labrun-bar-fill jp-labrun-bar-${level}`}
          style={{ width: `${percent}%` }}
        />
      </span>
      <span className="jp-labrun-bar-text">{props.text}</span>
    </div>
  );
}

/** What went wrong and how to fix it, in place of a blank panel. */
export function Problem(props: { message: string }): JSX.Element {
  return (
    <div className="jp-labrun-problem" role="alert">
      {props.message}
    </div>
  );
}

/** A muted line for an empty list. */
export function Empty(props: { children: React.ReactNode }): JSX.Element {
  return <div className="jp-labrun-empty">{props.children}</div>;
}

/** A key/value table (parameters, environment). */
export function KeyValues(props: { rows: [string, unknown][]; empty?: string }): JSX.Element {
  if (props.rows.length === 0) {
    return <Empty>{props.empty ?? 'none'}</Empty>;
  }
  return (
    <table className="jp-labrun-kv">
      <tbody>
        {props.rows.map(([key, value]) => (
          <tr key={key}>
            <th>{key}</th>
            <td>{formatValue(value)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
