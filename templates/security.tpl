% rebase('base.tpl', title=title, session=session)
<section class="card">
  <h1>Security log</h1>
  <p class="muted">Failed agent authentications, admin logins and key changes, newest first (kept 30 days). Only a key's public id is ever recorded, never the key.</p>
  <table class="list">
    <thead><tr><th>When (UTC)</th><th>Event</th><th>From</th><th>Server</th><th>Key id</th><th>Detail</th></tr></thead>
    <tbody>
    % for e in events:
      <tr class="{{'bad' if e.kind in ('login_failed', 'login_throttled', 'bad_key', 'unknown_key', 'revoked', 'expired', 'malformed', 'missing') else ''}}">
        <td>{{e.created_at.strftime('%Y-%m-%d %H:%M:%S')}}</td><td>{{e.kind.replace('_', ' ')}}</td><td>{{e.client_addr or ''}}</td>
        <td>{{names.get(e.server_id, '') if e.server_id else ''}}</td><td><code>{{e.key_id or ''}}</code></td><td>{{e.detail or ''}}</td>
      </tr>
    % end
    % if not events:
      <tr><td colspan="6" class="muted">Nothing recorded yet.</td></tr>
    % end
    </tbody>
  </table>
</section>
