<div id="status-board" hx-get="{{refresh}}" hx-trigger="every 30s" hx-target="this" hx-swap="outerHTML">
  <h1 class="{{'down' if down else 'up'}}">{{'%d of %d down' % (down, len(rows)) if down else ('All systems up' if rows else 'Status')}}</h1>
  % if rows:
  <table class="list status-table">
    <thead><tr><th>Service</th><th>Now</th><th class="num">24 h</th><th class="num">7 d</th><th class="num">30 d</th></tr></thead>
    <tbody>
    % for r in rows:
      <tr><td>{{r['name']}}</td><td><span class="badge {{'online' if r['state'] == 'up' else 'offline' if r['state'] == 'down' else 'never-seen'}}">{{r['state']}}</span></td>
      % for label, value in r['uptime']:
      <td class="num">{{'—' if value is None else ('%.2f %%' % value if value < 100 else '100 %')}}</td>
      % end
      </tr>
    % end
    </tbody>
  </table>
  % else:
  <p class="muted">No servers are published here yet.</p>
  % end
  <p class="muted small">Updated {{now.strftime('%Y-%m-%d %H:%M UTC')}} · refreshes every 30 s</p>
</div>
% if get('oob', True):
<title>{{title}}</title>
% end
