% count = len(query['columns'])
<table id="servers-table" class="servers {{'fit-all' if count <= 6 else 'fit-900' if count <= 8 else 'fit-1200' if count <= 11 else ''}}">
  <colgroup>{{!''.join('<col class="%s">' % css for _key, _label, css, _numeric in query['columns'])}}</colgroup>
  <thead>
    <tr>
    % for key, label, _css, numeric in query['columns']:
      % active = query['sort'] == key
      % next_dir = 'asc' if active and query['dir'] == 'desc' else ('desc' if active or numeric or key == 'seen' else 'asc')
      <th class="{{'num' if numeric else ''}}" aria-sort="{{('ascending' if query['dir'] == 'asc' else 'descending') if active else 'none'}}"><a href="/servers?sort={{key}}&amp;dir={{next_dir}}&amp;q={{quote(query['q'])}}&amp;status={{quote(query['status'])}}{{query['kept_query']}}">{{label}}{{(' ▲' if query['dir'] == 'asc' else ' ▼') if active else ''}}</a></th>
    % end
    </tr>
  </thead>
  % include('_server_rows.tpl')
</table>
% if oob:
% include('_fleet_head.tpl', offset=None)
% end
