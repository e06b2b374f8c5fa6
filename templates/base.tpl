<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="htmx-config" content='{"includeIndicatorStyles": false, "historyCacheSize": 0}'>
<title>{{title}}</title>
<link rel="stylesheet" href="/static/style.css">
<link id="favicon" rel="icon" href="/static/{{get('favicon', 'favicon.svg')}}" type="image/svg+xml">
<script src="/static/{{htmx_file}}" defer></script>
<script src="/static/mpanel.js" defer></script>
</head>
% if session:
<body hx-headers='{"X-CSRF-Token": "{{session.csrf_token}}"}'>
% else:
<body>
% end
<header class="topbar">
  <a class="brand" href="{{'/servers' if session else '/status'}}"><img src="/static/favicon.svg" alt="" width="18" height="18"> mPanel</a>
  % if session:
  <nav class="main-nav">
    <a href="/servers">Servers</a>
    <a href="/alerts">Alerts</a>
    % if access.staff:
    <a href="/customers">Customers</a>
    % end
    % if access.staff and access.may_change:
    <a href="/security">Security</a>
    <a href="/upgrades">Upgrades</a>
    % end
    % if access.may_change:
    <a href="/servers/new" class="button small">Add server</a>
    % end
  </nav>
  <div class="who">
    <a href="/account" title="{{session.admin.role}}: your account and two-factor login">{{session.admin.username}}{{'' if access.staff else ' · ' + session.admin.customer.name}}{{'' if access.may_change else ' (read-only)'}}</a>
    <form method="post" action="/logout" class="inline">
      <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
      <button type="submit" class="link">Log out</button>
    </form>
  </div>
  % end
</header>
<main>
{{!base}}
</main>
</body>
</html>
