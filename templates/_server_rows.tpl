<tbody id="server-rows"{{!' hx-swap-oob="true"' if get('body_oob') else ''}} hx-post="/servers/refresh{{'?customer=%d' % query['customer'] if query['customer'] else ''}}" hx-include="#filters" hx-vals='{"have": "", "summary": ""}' hx-disinherit="*" hx-trigger="every 10s" hx-swap="none" hx-sync="#filters:drop" data-now="{{now}}">
{{!''.join(rows)}}
% if total and not matched:
  <tr class="none"><td colspan="{{len(query['columns'])}}">No server matches this filter.</td></tr>
% end
% include('_server_more.tpl', offset=len(rows), oob=False)
</tbody>
