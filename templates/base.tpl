<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="htmx-config" content='{"includeIndicatorStyles": false}'>
<title>{{title}}</title>
<link rel="stylesheet" href="/static/style.css">
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<script src="/static/{{htmx_file}}" defer></script>
</head>
<body>
<header class="topbar">
  <a class="brand" href="/servers">mPanel</a>
  % if session:
  <nav>
    <span class="who">{{session.admin.username}}</span>
    <form method="post" action="/logout" class="inline">
      <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
      <button type="submit" class="link">Log out</button>
    </form>
  </nav>
  % end
</header>
<main>
{{!base}}
</main>
</body>
</html>
