<tbody id="server-rows" hx-get="/servers" hx-trigger="every 10s" hx-target="this" hx-swap="outerHTML">
% for s in servers:
  <tr class="status-{{s['status'].replace(' ', '-')}}" data-server-id="{{s['id']}}">
    <td class="name">{{s['name']}}</td>
    <td>{{s['hostname']}}</td>
    <td><span class="badge {{s['status'].replace(' ', '-')}}">{{s['status']}}</span></td>
    <td><time datetime="{{s['last_seen_iso']}}">{{s['last_seen']}}</time></td>
    <td class="num">{{'' if s['cpu'] is None else '%.1f %%' % s['cpu']}}</td>
    <td class="num">{{'' if s['memory'] is None else '%.1f %%' % s['memory']}}</td>
    <td class="num">{{'' if s['disk'] is None else '%.1f %%' % s['disk']}}</td>
    <td class="num">{{'' if s['load'] is None else '%.2f' % s['load']}}</td>
    <td>{{s['version']}}</td>
  </tr>
% end
</tbody>
