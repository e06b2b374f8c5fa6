% rebase('base.tpl', title=title, session=session, favicon='favicon-alert.svg' if state == 'offline' or firing else 'favicon.svg')
<p class="crumbs"><a href="/servers">Servers</a> / <span>{{server.name}}</span></p>
% if get('error'):
<p class="error card" role="alert">{{error}}</p>
% end
% include('_server_head.tpl', oob=False)
<section class="card" id="charts-card">
  % include('_charts.tpl', charts=charts)
</section>
<section class="card" id="processes-card">
  <div class="card-head">
    <h2>Processes and services</h2>
    <form class="at-form" hx-get="/servers/{{server.id}}/processes" hx-target="#processes" hx-swap="outerHTML" action="/servers/{{server.id}}/processes" method="get">
      <label>At <input type="datetime-local" name="at" step="60" aria-label="Minute (UTC)"> UTC</label>
      <button type="submit" class="small">Show</button>
      <button type="button" class="small secondary" hx-get="/servers/{{server.id}}/processes" hx-target="#processes" hx-swap="outerHTML">Now</button>
    </form>
  </div>
  <p class="hint">Click a point on any chart to see what was running at that minute.</p>
  % include('_processes.tpl', view=processes)
</section>
% if access.may_change:
% include('_manage.tpl')
% end
