<tr id="row-{{position}}" class="status-{{s['status'].replace(' ', '-')}}{{' critical' if s['critical'] else ''}}" data-server-id="{{s['id']}}">
  % for key, _label, _css, _numeric in columns:
  % if key == 'name':
    <td class="name"><a href="/servers/{{s['id']}}">{{s['name']}}</a>{{!' <span class="tag crit" title="critical: alerts when offline">critical</span>' if s['critical'] else ''}}</td>
  % elif key == 'hostname':
    <td class="host">{{s['hostname']}}</td>
  % elif key == 'status':
    <td><span class="badge {{s['status'].replace(' ', '-')}}">{{s['status']}}</span>{{!' <span class="tag">revoked</span>' if s['revoked'] else ''}}
    % if s['clock']:
    <span class="tag clock" title="The agent's clock is off: its samples carry its own times">{{s['clock']}}</span>
    % end
    </td>
  % elif key == 'seen':
    % if s['last_seen_iso']:
    <td><time datetime="{{s['last_seen_iso']}}" data-ago>{{s['last_seen']}}</time></td>
    % else:
    <td>never</td>
    % end
  % elif key == disk_full:
    % full = s[key]
    % if full:
    <td class="num">{{full[0]}} in <time datetime="{{full[2]}}" data-in>{{units.duration(full[1])}}</time></td>
    % else:
    <td class="num"></td>
    % end
  % elif key in cell_formats:
    <td class="num">{{cell_formats[key](s[key])}}</td>
  % elif key == 'traffic':
    % t = s['traffic']
    <td class="num traffic{{' bad' if t and t['level'] else ''}}" title="{{('cycle %s to %s; projected %s' % (t['start'], t['end'], units.size(t['projected']) if t['projected'] is not None else 'later in the cycle')) if t else ''}}">{{units.size(t['used']) if t else ''}}{{(' / %s (%.0f %%)' % (units.size(t['allowance']), t['percent'])) if t and t['allowance'] else ''}}</td>
  % elif key == 'services':
    <td class="svc">
    % down = [service for service, is_down in s['services'] if is_down]
    % for service in down:
      <span class="tag bad" title="down">{{service}}</span>
    % end
    % up = [service for service, is_down in s['services'] if not is_down]
    % if up:
      <span class="tag" title="up: {{', '.join(up)}}">{{len(up)}} up</span>
    % end
    % other = [p for p in s['problems'] if p[0] != 'service_down']
    % if other:
      <span class="tag bad" title="{{'; '.join('%s: %s' % (subject, text) for _metric, subject, text in other)}}">{{len(other)}} problem{{'s' if len(other) > 1 else ''}}</span>
    % end
    </td>
  % elif key.startswith(service_sort):
    % service = key[len(service_sort):]
    % state, wrong = s['service_states'].get(service, (None, []))
    <td class="svc-one">
    % if state == 'down':
      <span class="tag bad" title="{{service}} is down">down</span>
    % elif state == 'problem':
      <span class="tag bad" title="{{'; '.join(wrong)}}">{{len(wrong)}} problem{{'s' if len(wrong) > 1 else ''}}</span>
    % elif state == 'up':
      <span class="tag" title="{{service}} is up">up</span>
    % end
    </td>
  % elif key == 'version':
    <td class="ver">{{s['version']}}
    % if s['upgrade_failed'] is not None:
      <span class="tag bad" title="{{s['upgrade_failed']}}">upgrade failed</span>
    % end
    </td>
  % end
  % end
  </tr>
