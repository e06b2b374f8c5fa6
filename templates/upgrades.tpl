% rebase('base.tpl', title=title, session=session)
% if error:
<p class="error card" role="alert">{{error}}</p>
% end
<section class="card">
  <h1>Agent upgrades</h1>
  % if shipped:
  <p>This panel ships agent <strong>{{shipped.version}}</strong> (<code>{{agent_file}}</code>, SHA-256 <code>{{shipped.sha256}}</code>, {{f'{shipped.size:,}'}} bytes). A rollout offers it to the servers you choose, a wave at a time; only agents installed with <code>--auto-update</code> take it. A wave starts when every server of the one before runs the new version (or was skipped: not opted in, offline); a server that does not come back with it is marked <em>upgrade failed</em>, its agent puts its previous file back by itself, and the rollout halts before the next wave.</p>
  % else:
  <p class="error">The panel's agent file <code>{{agent_file}}</code> is missing or has no <code>__version__</code> line: there is nothing to roll out.</p>
  % end
  <p class="muted">An agent that takes upgrades runs whatever agent.py this panel offers, as its own user: see the security notes in docs/security.md.</p>
  % if shipped:
  <form method="post" action="/upgrades" class="stacked">
    <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
    <fieldset>
      <legend>Which servers</legend>
      <label><input type="radio" name="choice" value="servers" checked> These servers:</label>
      <select name="server_id" multiple size="{{min(max(len(fleet), 2), 8)}}" aria-label="Servers">
        % for server_id, name in fleet:
        <option value="{{server_id}}">{{name}}</option>
        % end
      </select>
      % if customers:
      <label><input type="radio" name="choice" value="customer"> A customer's servers:</label>
      <select name="customer_id" aria-label="Customer">
        % for c in customers:
        <option value="{{c.id}}">{{c.name}}</option>
        % end
      </select>
      % end
      <label><input type="radio" name="choice" value="percent"> A share of the fleet: <input name="percent" type="number" min="1" max="100" value="10" size="4"> %</label>
    </fieldset>
    <label>Servers per wave <input name="wave_size" type="number" min="1" max="{{max_wave}}" value="1" size="4"></label>
    <button type="submit">Start rollout of {{shipped.version}}</button>
  </form>
  % end
</section>
% for rollout, rows in rollouts:
<section class="card">
  <h2>Rollout {{rollout.id}}: agent {{rollout.version}} <span class="badge {{'bad' if rollout.state == 'halted' else ''}}">{{rollout.state}}</span></h2>
  <p class="muted">To {{rollout.target}}, waves of {{rollout.wave_size}}; started {{rollout.created_at.strftime('%Y-%m-%d %H:%M:%S')}} UTC by {{rollout.started_by}}{{'; ended ' + rollout.finished_at.strftime('%Y-%m-%d %H:%M:%S') + ' UTC' if rollout.finished_at else ''}}{{': ' + rollout.detail if rollout.detail else ''}}.</p>
  % if rollout.state == 'running':
  <form method="post" action="/upgrades/{{rollout.id}}/halt" class="inline">
    <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
    <button type="submit" class="small secondary">Halt</button>
  </form>
  % end
  <table class="list">
    <thead><tr><th>Wave</th><th>Server</th><th>Result</th><th>Runs</th><th>Offered (UTC)</th><th>Settled (UTC)</th><th>Detail</th></tr></thead>
    <tbody>
    % for row in rows:
      <tr class="{{'bad' if row.state == 'failed' else ''}}">
        <td class="num">{{row.wave}}</td><td><a href="/servers/{{row.server_id}}">{{row.name}}</a></td>
        <td>{{'upgrade failed' if row.state == 'failed' else row.state}}</td><td>{{row.agent_version or ''}}</td>
        <td>{{row.offered_at.strftime('%Y-%m-%d %H:%M:%S') if row.offered_at else ''}}</td>
        <td>{{row.finished_at.strftime('%Y-%m-%d %H:%M:%S') if row.finished_at else ''}}</td><td>{{row.detail or ''}}</td>
      </tr>
    % end
    </tbody>
  </table>
</section>
% end
