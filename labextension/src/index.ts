/**
 * labrun's JupyterLab extension: registers the sidebar, the main-area views and commands.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget, showErrorMessage } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IFrame, LabIcon } from '@jupyterlab/ui-components';
import type { ReadonlyPartialJSONObject } from '@lumino/coreutils';

import { api, reportUrl } from './api';
import { LabrunContext } from './context';
import { ServerEvents } from './events';
import { RestorableTabs } from './restore';
import { CommandIDs, ISubmitJob } from './tokens';
import { CompareView, compareId } from './widgets/compare';
import { RunDetail } from './widgets/detail';
import { GpusPanel } from './widgets/gpus';
import { QueuesPanel } from './widgets/queues';
import { ReportsPanel } from './widgets/reports';
import { RunsPanel } from './widgets/runs';
import { LabrunSidebar, PanelName } from './widgets/sidebar';

/** Where notebooks opened from runs and reports are saved in the workspace. */
const OUTPUT_DIR = 'labrun-outputs';

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M4 4h4v16H4zM10 10h4v10h-4zM16 7h4v13h-4z"/>
  </g>
</svg>`;

/** labrun's sidebar icon. */
export const labrunIcon = new LabIcon({ name: 'labrun:icon', svgstr: ICON_SVG });

/** The plugin's id; its settings' schema is `schema/plugin.json`. */
const PLUGIN_ID = 'labrun:plugin';

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Runs, queues, GPUs and reports of the labrun pool.',
  autoStart: true,
  optional: [ICommandPalette, ILayoutRestorer, INotebookTracker, ISettingRegistry],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    notebooks: INotebookTracker | null,
    settingRegistry: ISettingRegistry | null
  ) => {
    /** Show a main-area tab (the one open already, if there is one) and track a new one. */
    const openWidget = (
      widget: MainAreaWidget,
      tabs: RestorableTabs,
      args: ReadonlyPartialJSONObject
    ): void => {
      const existing = [...app.shell.widgets('main')].find(w => w.id === widget.id);
      if (existing) {
        widget.dispose();
        app.shell.activateById(existing.id);
        return;
      }
      tabs.track(widget, args);
      app.shell.add(widget, 'main');
      app.shell.activateById(widget.id);
    };

    const openNotebook = async (apiPath: string, fileName: string) => {
      try {
        const content = await api.json(apiPath);
        const contents = app.serviceManager.contents;
        try {
          await contents.get(OUTPUT_DIR, { content: false });
        } catch {
          await contents.save(OUTPUT_DIR, { type: 'directory' });
        }
        const path = `${OUTPUT_DIR}/${fileName.replace(/[\\/]/g, '_')}`;
        await contents.save(path, { type: 'notebook', format: 'json', content });
        await app.commands.execute('docmanager:open', { path });
      } catch (error) {
        await showErrorMessage('Cannot open the notebook', (error as Error).message);
      }
    };

    const events = new ServerEvents();
    const ctx = new LabrunContext(
      events,
      id => void app.commands.execute(CommandIDs.openRun, { id }),
      ids => void app.commands.execute(CommandIDs.compareRuns, { ids }),
      (id, name) => void app.commands.execute(CommandIDs.openReport, { id, name }),
      (apiPath, fileName) => void openNotebook(apiPath, fileName)
    );
    void ctx.check();

    const currentNotebook = () => {
      const panel = notebooks?.currentWidget;
      if (!panel || !panel.context.model) {
        return null;
      }
      // A notebook model's JSON is the nbformat notebook, an object.
      const content = panel.context.model.toJSON() as ISubmitJob['content'];
      return { path: panel.context.path, content };
    };
    const queues = new QueuesPanel(ctx, currentNotebook);
    const runs = new RunsPanel(ctx);
    if (settingRegistry) {
      void rememberMetric(settingRegistry, runs);
    }
    const sidebar = new LabrunSidebar(
      {
        runs,
        queues,
        gpus: new GpusPanel(ctx),
        reports: new ReportsPanel(ctx)
      },
      labrunIcon
    );
    app.shell.add(sidebar, 'left', { rank: 600 });
    restorer?.add(sidebar, sidebar.id);

    const showPanel = (name: PanelName) => {
      sidebar.showPanel(name);
      app.shell.activateById(sidebar.id);
    };
    const panelCommands: [string, PanelName, string][] = [
      [CommandIDs.openRuns, 'runs', 'labrun: Open Runs'],
      [CommandIDs.openQueues, 'queues', 'labrun: Open Queues'],
      [CommandIDs.openGpus, 'gpus', 'labrun: Open GPUs'],
      [CommandIDs.openReports, 'reports', 'labrun: Open Reports']
    ];
    for (const [command, name, label] of panelCommands) {
      app.commands.addCommand(command, { label, execute: () => showPanel(name) });
      palette?.addItem({ command, category: 'labrun' });
    }

    // Run, comparison and report tabs come back after a reload.
    const runTabs = new RestorableTabs('labrun-run', CommandIDs.openRun, restorer);
    const compareTabs = new RestorableTabs('labrun-compare', CommandIDs.compareRuns, restorer);
    const reportTabs = new RestorableTabs('labrun-report', CommandIDs.openReport, restorer);

    app.commands.addCommand(CommandIDs.openRun, {
      label: 'labrun: Open Run',
      execute: args => {
        const id = Number(args.id);
        const content = new RunDetail(ctx, id);
        const widget = new MainAreaWidget({ content });
        widget.id = `labrun-run-${id}`;
        widget.title.icon = labrunIcon;
        openWidget(widget, runTabs, { id });
      }
    });
    app.commands.addCommand(CommandIDs.compareRuns, {
      label: 'labrun: Compare Runs',
      execute: args => {
        const ids = ((args.ids as number[]) ?? []).map(Number);
        const content = new CompareView(ctx, ids);
        const widget = new MainAreaWidget({ content });
        widget.id = compareId(ids);
        widget.title.icon = labrunIcon;
        openWidget(widget, compareTabs, { ids });
      }
    });
    app.commands.addCommand(CommandIDs.openReport, {
      label: 'labrun: Open Report',
      execute: args => {
        const id = Number(args.id);
        // No scripts in the frame: a report is static HTML, and the server's content
        // security policy blocks scripts as well.
        const content = new IFrame({ sandbox: [], referrerPolicy: 'no-referrer' });
        content.url = reportUrl(id);
        content.addClass('jp-labrun-report-frame');
        const widget = new MainAreaWidget({ content });
        widget.id = `labrun-report-${id}`;
        widget.title.label = String(args.name ?? `Report ${id}`);
        widget.title.icon = labrunIcon;
        widget.title.closable = true;
        openWidget(widget, reportTabs, { id, name: widget.title.label });
      }
    });
    app.commands.addCommand(CommandIDs.submitNotebook, {
      label: 'labrun: Submit Notebook as a Job',
      caption: 'Queue the notebook in focus on the pool, with parameters',
      isEnabled: () => !!notebooks?.currentWidget,
      execute: () => {
        showPanel('queues');
        queues.showSubmitForm();
      }
    });
    app.commands.addCommand(CommandIDs.openSidebar, {
      label: 'labrun: Open Sidebar',
      execute: () => app.shell.activateById(sidebar.id)
    });
    for (const command of [CommandIDs.submitNotebook, CommandIDs.openSidebar]) {
      palette?.addItem({ command, category: 'labrun' });
    }
  }
};

/**
 * Keep the Runs panel's metric in the settings: the one picked last is shown after a reload
 * (Settings > Settings Editor > labrun shows it too).
 */
async function rememberMetric(registry: ISettingRegistry, runs: RunsPanel): Promise<void> {
  let settings: ISettingRegistry.ISettings;
  try {
    settings = await registry.load(PLUGIN_ID);
  } catch (error) {
    // Without settings the panel still works; it just does not remember the metric.
    console.warn('labrun: cannot load the settings', error);
    return;
  }
  const apply = () => runs.setSavedMetric(String(settings.get('metric').composite ?? ''));
  apply();
  settings.changed.connect(apply);
  runs.metricPicked.connect((_, metric) => void settings.set('metric', metric));
}

export default plugin;
