{{!summary.replace('<section ', '<section hx-swap-oob="true" ', 1)}}
<link id="favicon" rel="icon" type="image/svg+xml" href="/static/{{favicon}}" hx-swap-oob="true">
% if offset is not None:
% include('_server_more.tpl', oob=True)
% end
<title>{{title}}</title>
