/**
 * The labrun entry of the left sidebar: Runs, Queues, GPUs and Reports as tabs.
 */
import { LabIcon } from '@jupyterlab/ui-components';
import { TabPanel } from '@lumino/widgets';

import { LivePanel } from './live';

/** The panels' ids, in tab order. */
export type PanelName = 'runs' | 'queues' | 'gpus' | 'reports';

/** The sidebar: one tab per panel; only the shown panel loads or polls. */
export class LabrunSidebar extends TabPanel {
  /**
   * @param panels The four panels, keyed by name.
   * @param icon The sidebar tab's icon.
   */
  constructor(
    readonly panels: Record<PanelName, LivePanel>,
    icon: LabIcon
  ) {
    super({ tabPlacement: 'top' });
    this.id = 'labrun-sidebar';
    this.title.icon = icon;
    this.title.caption = 'labrun: runs, queues, GPUs and reports';
    this.addClass('jp-labrun-sidebar');
    for (const panel of Object.values(panels)) {
      this.addWidget(panel);
    }
  }

  /** Bring a panel's tab to the front. */
  showPanel(name: PanelName): void {
    this.currentWidget = this.panels[name];
  }
}
