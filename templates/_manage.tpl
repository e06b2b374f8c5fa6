<section class="card manage" id="manage">
  <h2>Manage</h2>
  <div class="manage-grid">
    <form method="post" action="/servers/{{server.id}}/rename" class="stack">
      <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
      <label>Name <input name="name" value="{{server.name}}" maxlength="100" required></label>
      <button type="submit" class="small">Rename</button>
    </form>
    <form method="post" action="/servers/{{server.id}}/flags" class="stack">
      <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
      <input type="hidden" name="critical" value="{{'0' if server.critical else '1'}}">
      <p class="muted">{{'Critical: an alert fires when it goes offline.' if server.critical else 'Not critical: going offline is shown, not alerted.'}}</p>
      <button type="submit" class="small secondary">{{'Unmark critical' if server.critical else 'Mark critical'}}</button>
    </form>
    % if access.staff:
    <form method="post" action="/servers/{{server.id}}/customer" class="stack">
      <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
      <label>Customer <select name="customer_id">
        <option value="">none: staff only</option>
        % for c in customers:
        <option value="{{c.id}}" {{'selected' if c.id == server.customer_id else ''}}>{{c.name}}</option>
        % end
      </select></label>
      <p class="muted">The customer's users see this server, its data and its alerts.</p>
      <button type="submit" class="small secondary">Move</button>
    </form>
    % end
    <form method="post" action="/servers/{{server.id}}/flags" class="stack">
      <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
      <input type="hidden" name="public_status" value="{{'0' if server.public_status else '1'}}">
      % # A customer's server is published on that customer's page, a staff-only one on /status.
      % page = "its customer's status page" if server.customer_id else 'the public status page'
      <p class="muted">{{('Shown on %s (up/down and uptime only).' if server.public_status else 'Not on %s.') % page}}</p>
      <button type="submit" class="small secondary">{{('Remove from %s' if server.public_status else 'Show on %s') % ('the status page' if server.customer_id else '/status')}}</button>
    </form>
    <form method="post" action="/servers/{{server.id}}/maintenance" class="stack">
      <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
      % if maintenance:
      <p class="muted">In maintenance until {{maintenance.ends_at.strftime('%Y-%m-%d %H:%M UTC')}}{{(': ' + maintenance.reason) if maintenance.reason else ''}}. Alerts are recorded, not sent; data keeps flowing.</p>
      <input type="hidden" name="end" value="1">
      <button type="submit" class="small secondary">End maintenance now</button>
      % else:
      <label>Maintenance: silence alerts for
        <select name="minutes"><option value="30">30 minutes</option><option value="60" selected>1 hour</option><option value="240">4 hours</option><option value="1440">1 day</option><option value="10080">1 week</option></select></label>
      <label>Reason <input name="reason" maxlength="200" placeholder="kernel upgrade"></label>
      <button type="submit" class="small secondary">Start maintenance</button>
      % end
    </form>
    <form method="post" action="/servers/{{server.id}}/rotate" class="stack">
      <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
      <p class="muted">A new key, shown once. The running agent picks it up by itself; the old key keeps working meanwhile.</p>
      <button type="submit" class="small secondary">Rotate key</button>
    </form>
    <form method="post" action="/servers/{{server.id}}/revoke" class="stack">
      <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
      <p class="muted">Cut the agent off now. Its data stays; rotate to give it a new key.</p>
      <button type="submit" class="small danger" {{'disabled' if agent.status == 'revoked' else ''}}>Revoke key</button>
    </form>
    % if access.staff:
    <form method="post" action="/servers/{{server.id}}/quota" class="stack" id="quota">
      <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
      % include('_quota_fields.tpl', holder=server, what='this server')
      <button type="submit" class="small secondary">Set traffic quota</button>
    </form>
    <form method="post" action="/servers/{{server.id}}/delete" class="stack">
      <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
      <label>Delete the server and all its data: type <code>{{server.name}}</code>
        <input name="confirm_name" autocomplete="off" required></label>
      <button type="submit" class="small danger">Delete server</button>
    </form>
    % end
  </div>
</section>
