% rebase('base.tpl', title=title, session=session)
<section class="card">
  <h1>Security log</h1>
  <p class="muted">Failed agent authentications, logins (and their two-factor codes), two-factor set-ups and removals, and key changes, latest first (kept 30 days). Only a key's public id is ever recorded, never the key, nor any two-factor secret or code. Repeated identical failures (same kind, address, key id and request) are one row per {{summary_minutes}} minutes: the count, and when the first and the latest happened.</p>
  % if customers:
  <form class="filters" action="/security" method="get">
    <select name="customer" aria-label="Customer">
      <option value="">All customers</option>
      % for c in customers:
      <option value="{{c.id}}" {{'selected' if customer == c.id else ''}}>{{c.name}}</option>
      % end
    </select>
    <button type="submit" class="small secondary">Filter</button>
  </form>
  % end
  <table class="list">
    <thead><tr><th>First (UTC)</th><th>Latest (UTC)</th><th>Count</th><th>Event</th><th>From</th><th>Server</th><th>Key id</th><th>Detail</th></tr></thead>
    <tbody>
    % for e in events:
      % repeated = e.occurrences > 1
      <tr class="{{'bad' if e.kind in failure_kinds else ''}}">
        <td>{{e.created_at.strftime('%Y-%m-%d %H:%M:%S')}}</td>
        <td>{{e.last_seen_at.strftime('%Y-%m-%d %H:%M:%S') if repeated and e.last_seen_at else ''}}</td>
        <td class="num">{{f'{e.occurrences:,}'}}</td><td>{{e.kind.replace('_', ' ')}}</td><td>{{e.client_addr or ''}}</td>
        <td>{{names.get(e.server_id, '') if e.server_id else ''}}</td><td><code>{{e.key_id or ''}}</code></td><td>{{e.detail or ''}}</td>
      </tr>
    % end
    % if not events:
      <tr><td colspan="8" class="muted">Nothing recorded yet.</td></tr>
    % end
    </tbody>
  </table>
</section>
