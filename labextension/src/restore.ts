/**
 * Main-area tabs that come back after a page reload: JupyterLab's layout restorer re-runs
 * the command that opened each one, with the arguments it was opened with.
 */
import { ILayoutRestorer } from '@jupyterlab/application';
import { MainAreaWidget, WidgetTracker } from '@jupyterlab/apputils';
import type { ReadonlyPartialJSONObject } from '@lumino/coreutils';

/** The open tabs of one kind (runs, comparisons or reports) and how to reopen them. */
export class RestorableTabs {
  /**
   * @param namespace Where the restorer keeps this kind's tabs in the workspace.
   * @param command The command that opens a tab of this kind; it is run with the arguments
   *   given to `track`.
   */
  constructor(namespace: string, command: string, restorer: ILayoutRestorer | null) {
    this.tracker = new WidgetTracker<MainAreaWidget>({ namespace });
    void restorer?.restore(this.tracker, {
      command,
      args: widget => this._args.get(widget) ?? {},
      name: widget => widget.id
    });
  }

  /** The tabs of this kind that are open. */
  readonly tracker: WidgetTracker<MainAreaWidget>;

  /** Remember a newly opened tab, and the arguments that open it again. */
  track(widget: MainAreaWidget, args: ReadonlyPartialJSONObject): void {
    this._args.set(widget, args);
    void this.tracker.add(widget);
  }

  private _args = new WeakMap<MainAreaWidget, ReadonlyPartialJSONObject>();
}
