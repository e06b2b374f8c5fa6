% rebase('base.tpl', title=title, session=session)
% admin = access.staff and access.may_change
% if error:
<p class="error card" role="alert">{{error}}</p>
% end
% if notice:
<p class="notice card" role="status">{{notice}}</p>
% end
% if customers:
<form class="filters" action="/alerts" method="get">
  <select name="customer" aria-label="Customer">
    <option value="">All customers</option>
    % for c in customers:
    <option value="{{c.id}}" {{'selected' if customer == c.id else ''}}>{{c.name}}</option>
    % end
  </select>
  <button type="submit" class="small secondary">Filter</button>
</form>
% end
<section class="card">
  <h1>Firing <span class="count">{{len(firing)}}</span></h1>
  % if firing:
  <table class="list">
    <thead><tr><th>Server</th><th>Rule</th><th>What</th><th>Since</th></tr></thead>
    <tbody>
    % for a in firing:
      <tr class="status-offline"><td><a href="/servers/{{a.server.id}}">{{a.server.name}}</a></td><td>{{a.rule}}</td><td>{{a.message}}{{' (silenced: maintenance)' if a.silenced else ''}}</td><td>{{a.started_at.strftime('%Y-%m-%d %H:%M UTC')}}</td></tr>
    % end
    </tbody>
  </table>
  % else:
  <p class="muted">Nothing is firing.</p>
  % end
</section>

% if access.staff:
<section class="card">
  <h2>Threshold rules</h2>
  <p class="muted">A figure's rule fires when every sample of the last N minutes is past its threshold, and resolves when every sample is 5 % back from it. A service check (service down, MySQL, PHP-FPM, mail queue, certificates, watched processes, systemd units) fires for each pool, certificate or unit once it has been past its threshold for N minutes, and resolves when it is back. A server's own rule replaces the global one for that metric.</p>
  <table class="list">
    <thead><tr><th>Applies to</th><th>Metric</th><th class="num">Threshold</th><th class="num">For</th><th>State</th>{{!'<th></th>' if admin else ''}}</tr></thead>
    <tbody>
    % for r in rules:
      <tr><td>{{r.server.name if r.server_id else 'all servers'}}</td><td title="{{rule_help.get(r.metric, '')}}">{{r.metric}}</td><td class="num">{{'when it happens' if r.metric in states else '%s %g%s' % (sides.get(r.metric, 'above'), r.threshold, units_of.get(r.metric, ''))}}</td><td class="num">{{r.minutes}} min</td><td>{{'enabled' if r.enabled else 'disabled'}}</td>
      % if admin:
      <td>
        % if r.server_id:
        <form method="post" action="/alerts/rules/{{r.id}}/delete" class="inline"><input type="hidden" name="csrf_token" value="{{session.csrf_token}}"><button class="link" type="submit">remove</button></form>
        % end
      </td>
      % end
      </tr>
    % end
    </tbody>
  </table>
  % if admin:
  <form method="post" action="/alerts/rules" class="row-form">
    <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
    <label>For <select name="server_id"><option value="">all servers</option>
      % for s in servers:
      <option value="{{s.id}}">{{s.name}}</option>
      % end
    </select></label>
    <label>Metric <select name="metric">
      % for m in metrics:
      <option>{{m}}</option>
      % end
    </select></label>
    <label>Threshold <input name="threshold" type="number" step="any" min="0" required size="6"></label>
    <label>For <input name="minutes" type="number" min="0" max="1440" value="5" required size="4"> min</label>
    <label>State <select name="enabled"><option value="1">enabled</option><option value="0">disabled</option></select></label>
    <button type="submit" class="small">Save rule</button>
  </form>
  % end
</section>

% end
% changes = access.may_change
<section class="card">
  <h2>Channels</h2>
  % if access.staff:
  <p class="muted">E-mail goes through {{'%s:%s (%s%s) from %s' % (smtp['host'], smtp['port'], smtp['tls'], ', with login' if smtp['login'] else '', smtp['sender']) if smtp['host'] else 'no mail server: set MPANEL_SMTP_HOST to send e-mail alerts'}}. A staff channel gets the staff-only servers' alerts; a customer's channel that customer's servers' alerts only.</p>
  % else:
  <p class="muted">Where your servers' alerts go. Your channels are yours alone: no other customer sees or uses them.</p>
  % end
  <table class="list">
    <thead><tr><th>Name</th>{{!'<th>Owner</th>' if access.staff else ''}}<th>Kind</th><th>Target</th><th>Default</th><th>Last delivery</th>{{!'<th></th>' if changes else ''}}</tr></thead>
    <tbody>
    % for c in channels:
      % d = last_delivery.get(c.id)
      <tr><td>{{c.name}}</td>
      % if access.staff:
      <td>{{c.customer.name if c.customer_id else 'staff'}}</td>
      % end
      <td>{{c.kind}}</td><td class="target">{{shown_target(c.kind, c.target) if changes else c.kind + ' (shown to admins)'}}</td><td>{{'yes' if c.is_default else 'routed only'}}</td>
      <td>{{('%s %s, %s' % (d.event, d.status, d.created_at.strftime('%Y-%m-%d %H:%M UTC'))) if d else '—'}}{{(': ' + d.last_error) if d and d.last_error else ''}}</td>
      % if changes:
      <td class="actions">
        <form method="post" action="/alerts/channels/{{c.id}}/test" class="inline"><input type="hidden" name="csrf_token" value="{{session.csrf_token}}"><button class="small secondary" type="submit">Send test alert</button></form>
        <form method="post" action="/alerts/channels/{{c.id}}/delete" class="inline"><input type="hidden" name="csrf_token" value="{{session.csrf_token}}"><button class="link" type="submit">remove</button></form>
        <details><summary>edit</summary>
          <form method="post" action="/alerts/channels/{{c.id}}/edit" class="row-form">
            <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
            <label>Name <input name="name" required maxlength="64" size="12" value="{{c.name}}"></label>
            % if shown_target(c.kind, c.target) == c.target:
            <label class="grow">Target <input name="target" required maxlength="2000" value="{{c.target}}"></label>
            % else:
            <label class="grow">Target <input name="target" maxlength="2000" placeholder="unchanged ({{shown_target(c.kind, c.target)}}): type a new URL to replace it"></label>
            % end
            <label class="check"><input type="checkbox" name="is_default" value="1" {{'checked' if c.is_default else ''}}> default</label>
            <button type="submit" class="small">Save channel</button>
          </form>
        </details>
      </td>
      % end
      </tr>
    % end
    % if not channels:
      <tr><td colspan="7" class="muted">No channels: alerts are recorded here but sent nowhere.</td></tr>
    % end
    </tbody>
  </table>
  % if changes:
  <form method="post" action="/alerts/channels" class="row-form">
    <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
    <label>Name <input name="name" required maxlength="64" size="12"></label>
    % if access.staff and customers:
    <label>Owner <select name="customer_id"><option value="">staff</option>
      % for cu in customers:
      <option value="{{cu.id}}" {{'selected' if customer == cu.id else ''}}>{{cu.name}}</option>
      % end
    </select></label>
    % end
    <label>Kind <select name="kind">
    % for kind in channel_kinds:
      <option value="{{kind.name}}">{{kind.label}}</option>
    % end
    </select></label>
    <label class="grow">Target <input name="target" required maxlength="2000" placeholder="{{' or '.join(kind.example for kind in channel_kinds)}}"></label>
    <label class="check"><input type="checkbox" name="is_default" value="1" checked> default for {{'its owner\'s servers' if access.staff else 'all your servers'}}</label>
    <button type="submit" class="small">Add channel</button>
  </form>
  % end
</section>

<section class="card">
  <h2>Routes</h2>
  <p class="muted">A server with routes sends its alerts to those channels only; every other server uses its owner's default channels.</p>
  <table class="list">
    <thead><tr><th>Server</th><th>Channel</th>{{!'<th></th>' if changes else ''}}</tr></thead>
    <tbody>
    % for r in routes:
      <tr><td><a href="/servers/{{r.server.id}}">{{r.server.name}}</a></td><td>{{r.channel.name}}</td>
      % if changes:
      <td><form method="post" action="/alerts/routes/{{r.server.id}}/{{r.channel.id}}/delete" class="inline"><input type="hidden" name="csrf_token" value="{{session.csrf_token}}"><button class="link" type="submit">remove</button></form></td>
      % end
      </tr>
    % end
    % if not routes:
      <tr><td colspan="3" class="muted">No routes: every server's alerts go to its owner's default channels.</td></tr>
    % end
    </tbody>
  </table>
  % if changes and servers and channels:
  <form method="post" action="/alerts/routes" class="row-form">
    <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
    <label>Send <select name="server_id">
      % for s in servers:
      <option value="{{s.id}}">{{s.name}}</option>
      % end
    </select></label>
    <label>’s alerts to <select name="channel_id">
      % for c in channels:
      <option value="{{c.id}}">{{c.name}}{{(' (' + (c.customer.name if c.customer_id else 'staff') + ')') if access.staff else ''}}</option>
      % end
    </select></label>
    <button type="submit" class="small">Add route</button>
  </form>
  % end
</section>

% if access.staff and customers:
<section class="card">
  <h2>Customers' alerts to staff channels</h2>
  <p class="muted">A customer's servers' alerts go to that customer's channels, and also to the staff channels chosen here (the customer does not see these).</p>
  <table class="list">
    <thead><tr><th>Customer</th><th>Staff channel</th>{{!'<th></th>' if admin else ''}}</tr></thead>
    <tbody>
    % for choice in staff_choices:
      <tr><td>{{choice.customer.name}}</td><td>{{choice.channel.name}}</td>
      % if admin:
      <td><form method="post" action="/alerts/staff-channels/{{choice.customer.id}}/{{choice.channel.id}}/delete" class="inline"><input type="hidden" name="csrf_token" value="{{session.csrf_token}}"><button class="link" type="submit">remove</button></form></td>
      % end
      </tr>
    % end
    % if not staff_choices:
      <tr><td colspan="3" class="muted">None: customers' alerts go to their own channels only.</td></tr>
    % end
    </tbody>
  </table>
  % if admin and staff_channels:
  <form method="post" action="/alerts/staff-channels" class="row-form">
    <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
    <label>Also send <select name="customer_id">
      % for cu in customers:
      <option value="{{cu.id}}" {{'selected' if customer == cu.id else ''}}>{{cu.name}}</option>
      % end
    </select></label>
    <label>’s alerts to <select name="channel_id">
      % for c in staff_channels:
      <option value="{{c.id}}">{{c.name}}</option>
      % end
    </select></label>
    <button type="submit" class="small">Add</button>
  </form>
  % end
</section>
% end

<section class="card">
  <div class="card-head"><h2>History</h2><a class="small" href="/alerts.csv{{'?customer=%d' % customer if customer else ''}}" download>Download CSV</a></div>
  <table class="list">
    <thead><tr><th>Server</th><th>Rule</th><th>What</th><th>Started</th><th>Resolved</th></tr></thead>
    <tbody>
    % for a in history:
      <tr><td><a href="/servers/{{a.server.id}}">{{a.server.name}}</a></td><td>{{a.rule}}</td><td>{{a.message}}</td><td>{{a.started_at.strftime('%Y-%m-%d %H:%M')}}</td><td>{{a.resolved_at.strftime('%Y-%m-%d %H:%M') if a.resolved_at else ''}}</td></tr>
    % end
    % if not history:
      <tr><td colspan="5" class="muted">No resolved alerts yet.</td></tr>
    % end
    </tbody>
  </table>
</section>
