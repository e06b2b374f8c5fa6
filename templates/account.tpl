% rebase('base.tpl', title=title, session=session)
% if error:
<p class="error card" role="alert">{{error}}</p>
% end
% if notice:
<p class="notice card" role="status">{{notice}}</p>
% end
<section class="card account">
  <h1>Your account</h1>
  <p>{{admin.username}} · {{admin.role}}</p>

  <h2>Two-factor login</h2>
  % if recovery_codes:
  <p class="warn"><strong>Write these recovery codes down now: they are shown only this once.</strong> Each one logs you in once in place of a code, if your phone is lost. The panel keeps only their hashes.</p>
  <div class="copy-row">
    <pre id="recovery-codes" class="secret recovery-codes">{{'\n'.join(recovery_codes)}}</pre>
    <button type="button" class="small" data-copy="recovery-codes">Copy</button>
  </div>
  % end
  % if on:
  <p>On since {{admin.totp_enabled_at.strftime('%Y-%m-%d %H:%M')}} UTC. Recovery codes left: <strong id="recovery-codes-left">{{codes_left}}</strong>{{' — turn two-factor off and on again for a new set' if codes_left < 3 else ''}}.</p>
  % if required:
  <p class="muted">Your account must use two-factor: turning it off sends you back here to set it up again.</p>
  % end
  <form method="post" action="/account/two-factor/disable" class="stacked">
    <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
    <label>Current code (or a recovery code) <input name="code" inputmode="numeric" autocomplete="one-time-code" maxlength="64"></label>
    <label>or your password <input name="password" type="password" autocomplete="current-password"></label>
    <button type="submit" class="secondary">Turn two-factor off</button>
  </form>
  % elif setup:
  <p>Add this account to an authenticator app (any TOTP app: 6 digits, every {{step_seconds}} s), then type the code it shows to turn two-factor on.</p>
  <p>Secret: <code id="totp-secret" class="secret">{{setup['secret']}}</code> <button type="button" class="small" data-copy="totp-secret">Copy</button></p>
  <p>Or open this link on the phone: <a id="totp-link" href="{{setup['uri']}}">{{setup['uri']}}</a></p>
  <form method="post" action="/account/two-factor/confirm" class="stacked">
    <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
    <label>Code from the app <input name="code" inputmode="numeric" autocomplete="one-time-code" required maxlength="16"></label>
    <label>Your password <input name="password" type="password" autocomplete="current-password" required></label>
    <button type="submit">Turn two-factor on</button>
  </form>
  <form method="post" action="/account/two-factor/setup" class="inline">
    <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
    <button type="submit" class="link">Start again with a new secret</button>
  </form>
  % else:
  % if required:
  <p class="warn"><strong>Your account must use two-factor login:</strong> set it up to reach the other pages.</p>
  % end
  <p>Off: your password alone logs you in. With two-factor, a login also needs the 6-digit code of an authenticator app on your phone.</p>
  <form method="post" action="/account/two-factor/setup" class="inline">
    <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
    <button type="submit">Set up two-factor</button>
  </form>
  % end
</section>

<section class="card account" id="tokens">
  <h2>API tokens</h2>
  <p>A token lets a script use the panel's JSON API (<code>/api/v1</code>, see <a href="/api/openapi.json">the OpenAPI document</a>) as you, with no more than you may see and do: <code>Authorization: Bearer mpt_…</code>.</p>
  % if new_token:
  <p class="warn"><strong>Copy this token now: it is shown only this once.</strong> The panel keeps only its hash.</p>
  <div class="copy-row">
    <pre id="new-token" class="secret">{{new_token}}</pre>
    <button type="button" class="small" data-copy="new-token">Copy</button>
  </div>
  % end
  % if tokens:
  <table class="tokens">
    <thead><tr><th>Name</th><th>Scope</th><th>Created</th><th>Last used</th><th>Expires</th><th></th></tr></thead>
    <tbody>
    % for token in tokens:
      % gone = token.revoked_at or (token.expires_at and token.expires_at <= now)
      <tr class="{{'muted' if gone else ''}}">
        <td>{{token.name}} <code class="muted">mpt_{{token.token_id}}_…</code></td>
        <td>{{scope_label(token)}}</td>
        <td>{{token.created_at.strftime('%Y-%m-%d %H:%M')}}</td>
        <td>{{token.last_used_at.strftime('%Y-%m-%d %H:%M') if token.last_used_at else 'never'}}</td>
        <td>{{token.expires_at.strftime('%Y-%m-%d %H:%M') if token.expires_at else 'never'}}</td>
        <td>
        % if token.revoked_at:
          revoked {{token.revoked_at.strftime('%Y-%m-%d %H:%M')}}
        % else:
          <form method="post" action="/account/tokens/{{token.id}}/revoke" class="inline">
            <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
            <button type="submit" class="secondary small">Revoke</button>
          </form>
        % end
        </td>
      </tr>
    % end
    </tbody>
  </table>
  <p class="muted">Times are UTC; the last use is recorded to the minute.</p>
  % else:
  <p class="muted">You have no tokens.</p>
  % end
  % if not required or on:
  <form method="post" action="/account/tokens" class="stacked">
    <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
    <label>Name <input name="name" required maxlength="64" placeholder="backup script"></label>
    <label>Your password <input name="password" type="password" autocomplete="current-password" required></label>
    <label>Scope <select name="scope">
    % for name, label in token_scopes:
      <option value="{{name}}">{{label}}</option>
    % end
    </select></label>
    % if customers:
    <label>For <select name="customer_id">
      <option value="">every server (staff-wide)</option>
      % for customer in customers:
      <option value="{{customer.id}}">{{customer.name}} only</option>
      % end
    </select></label>
    % end
    <label>Expires after (days, empty: never) <input name="expires_days" inputmode="numeric" maxlength="4"></label>
    <button type="submit">Create token</button>
  </form>
  % end
</section>
