<section id="server-head" class="card server-head status-{{state.replace(' ', '-')}}" hx-get="/servers/{{server.id}}" hx-trigger="every 10s" hx-target="this" hx-swap="outerHTML">
  <div class="head-title">
    <h1>{{server.name}}</h1>
    <span class="badge {{state.replace(' ', '-')}}">{{state}}</span>
    % if server.critical:
    <span class="tag crit">critical</span>
    % end
    % if agent.status == 'revoked':
    <span class="tag">key revoked</span>
    % end
    % if clock:
    <span class="tag clock" title="The agent's clock is off: its samples, charts and alert rules go by its own times; set the server's clock (NTP)">{{clock}}</span>
    % end
    % if server.public_status:
    <span class="tag">on status page</span>
    % end
    % owner = next((c for c in customers if c.id == server.customer_id), None)
    % if access.staff:
    <span class="tag" title="Whose server it is: that customer's users see it">{{owner.name if owner else 'staff only'}}</span>
    % end
    % if maintenance:
    <span class="tag maint" title="{{maintenance.reason or ''}}">maintenance until {{maintenance.ends_at.strftime('%H:%M UTC')}}</span>
    % end
  </div>
  <dl class="facts">
    <div><dt>Hostname</dt><dd>{{agent.hostname or '—'}}</dd></div>
    <div><dt>OS</dt><dd>{{agent.os or '—'}}</dd></div>
    <div><dt>Arch</dt><dd>{{agent.arch or '—'}}</dd></div>
    <div><dt>Agent</dt><dd>{{agent.agent_version or '—'}}
    % if get('upgrade_failed') is not None:
      <span class="tag bad" title="{{upgrade_failed}}">upgrade failed</span>
    % end
    </dd></div>
    <div><dt>Uptime</dt><dd>{{uptime or '—'}}</dd></div>
    <div><dt>Last seen</dt><dd>{{units.ago((now - agent.last_seen).total_seconds()) if agent.last_seen else 'never'}}</dd></div>
    <div><dt>Address</dt><dd>{{agent.ip_address or '—'}}</dd></div>
    <div class="traffic"><dt>Traffic this cycle</dt><dd title="{{traffic['start']}} to {{traffic['end']}} (UTC); in {{units.size(traffic['received'])}}, out {{units.size(traffic['sent'])}}">{{traffic['text']}}</dd></div>
  </dl>
  % if latest is not None:
  <dl class="gauges">
    <div><dt>CPU</dt><dd>{{units.percent(latest.cpu_usage)}}</dd></div>
    <div><dt>Memory</dt><dd>{{units.percent(units.share(latest.memory_used, latest.memory_total))}}</dd></div>
    <div><dt>Fullest disk</dt><dd>{{units.percent(latest.disk_max_percent)}}</dd></div>
    <div><dt>Load</dt><dd>{{units.load(latest.cpu_load_1min)}}</dd></div>
    <div><dt>Net in</dt><dd>{{units.rate(latest.network_rx_rate)}}</dd></div>
    <div><dt>Net out</dt><dd>{{units.rate(latest.network_tx_rate)}}</dd></div>
    <div><dt>Processes</dt><dd>{{latest.process_count if latest.process_count is not None else '—'}}</dd></div>
  </dl>
  % end
  % if firing:
  <ul class="firing-list">
    % for alert in firing:
    <li><span class="badge offline">firing</span> {{alert.message}} <span class="muted">(firing since {{alert.started_at.strftime("%Y-%m-%d %H:%M UTC")}})</span></li>
    % end
  </ul>
  % end
  % if agent.key_rotated_at:
  <p class="muted key-state">Key rotated {{units.ago((now - agent.key_rotated_at).total_seconds())}};
  % if agent.key_switched_at:
  the agent switched to the new key {{units.ago((now - agent.key_switched_at).total_seconds())}}.
  % elif agent.prev_key_id:
  waiting for the agent to pick up the new key (the old one works until {{agent.prev_key_expires_at.strftime('%Y-%m-%d %H:%M UTC')}}).
  % else:
  the agent has not used the new key yet.
  % end
  </p>
  % end
</section>
% if get('oob', True):
<title>{{title}}</title>
% end
