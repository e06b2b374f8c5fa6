<div id="processes">
  % if view['sample_time'] is None:
  <p class="muted">{{'No sample within 5 minutes before %s UTC (process lists are kept with the raw samples, %d days).' % (view['asked'].strftime('%Y-%m-%d %H:%M'), kept_days) if view['asked'] else 'No sample yet.'}}</p>
  % else:
  <p class="muted">Sample of {{view['sample_time'].strftime('%Y-%m-%d %H:%M:%S')}} UTC{{'' if view['process_total'] is None else ' · %d processes' % view['process_total']}}</p>
  <div class="tables">
    % for heading, rows in (('Top by CPU', view['top_cpu']), ('Top by memory', view['top_memory'])):
    <table class="mini">
      <caption>{{heading}}</caption>
      <thead><tr><th>PID</th><th>Name</th><th>User</th><th class="num">CPU</th><th class="num">Memory</th></tr></thead>
      <tbody>
      % for p in rows:
        <tr><td class="num">{{p['pid']}}</td><td class="pname">{{p['name']}}</td><td>{{p['user']}}</td><td class="num">{{p['cpu']}}</td><td class="num">{{p['rss']}}</td></tr>
      % end
      % if not rows:
        <tr><td colspan="5" class="muted">not reported</td></tr>
      % end
      </tbody>
    </table>
    % end
    % for service in view['services']:
    % if service['figures'] or not service['lists']:
    <table class="mini">
      <caption>{{service['name']}}</caption>
      <tbody>
      % for key, label, value in service['figures']:
        <tr><th title="{{key}}">{{label}}</th><td class="num">{{value}}</td></tr>
      % end
      </tbody>
    </table>
    % end
    % for key, columns, rows in service['lists']:
    <div class="scroll"><table class="mini">
      <caption>{{service['name']}} · {{key}}</caption>
      <thead><tr>
      % for column, label in columns:
        <th title="{{column}}">{{label}}</th>
      % end
      </tr></thead>
      <tbody>
      % for row in rows:
        <tr>
        % for cell in row:
          <td>{{cell}}</td>
        % end
        </tr>
      % end
      </tbody>
    </table></div>
    % end
    % end
    % if view['unavailable']:
    <table class="mini">
      <caption>Not collected</caption>
      <tbody>
      % for name, why in view['unavailable']:
        <tr><th>{{name}}</th><td>{{why}}</td></tr>
      % end
      </tbody>
    </table>
    % end
  </div>
  % end
</div>
