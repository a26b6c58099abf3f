/**
 * The Reports panel: rendered report notebooks, newest first.
 */
import * as React from 'react';

import { api } from '../api';
import { Empty } from '../components/common';
import { LabrunContext } from '../context';
import { IReport, IServerEvent } from '../tokens';
import { age, keyParams } from '../view';
import { LivePanel } from './live';

/** The Reports panel of the sidebar. */
export class ReportsPanel extends LivePanel {
  constructor(ctx: LabrunContext) {
    super(ctx);
    this.id = 'labrun-reports';
    this.title.label = 'Reports';
    this.addClass('jp-labrun-panel');
  }

  protected wants(event: IServerEvent): boolean {
    return event.type === 'report.created';
  }

  protected async reload(): Promise<void> {
    try {
      this._reports = await api.reports();
      this._error = '';
    } catch (error) {
      this._error = (error as Error).message;
    }
    this.update();
  }

  protected renderContent(): JSX.Element {
    return (
      <div className="jp-labrun-reports">
        {this._error && <div className="jp-labrun-error">{this._error}</div>}
        {this._reports.length === 0 && !this._error && (
          <Empty>
            No reports yet. `labrun report notebooks/sweep_report.ipynb -p sweep 12` makes one.
          </Empty>
        )}
        <ul className="jp-labrun-report-list">
          {this._reports.map(report => (
            <li key={report.id} data-report-id={report.id}>
              <a
                className="jp-labrun-report-open"
                onClick={() => this.ctx.openReport(report.id, report.name)}
                title="Open the rendered report"
              >
                {report.name}
              </a>
              <span className="jp-labrun-muted">
                {' '}
                {report.user} · {age(report.created_at)} ago
              </span>
              <div className="jp-labrun-muted">{keyParams(report.params, 4)}</div>
              {report.has_notebook && (
                <button
                  className="jp-mod-styled jp-labrun-report-notebook"
                  onClick={() =>
                    this.ctx.openNotebook(
                      `reports/${report.id}/notebook`,
                      `report-${report.id}-${report.name}.ipynb`
                    )
                  }
                >
                  Open notebook
                </button>
              )}
            </li>
          ))}
        </ul>
      </div>
    );
  }

  private _reports: IReport[] = [];
  private _error = '';
}
