% rebase('base.tpl', title=title, session=None)
<section class="login card">
  <h1>Log in</h1>
  % if message:
  <p class="error" role="alert">{{message}}</p>
  % end
  <form method="post" action="/login">
    <input type="hidden" name="csrf_token" value="{{csrf_token}}">
    <label>Username <input name="username" value="{{username}}" autocomplete="username" required autofocus maxlength="64"></label>
    <label>Password <input name="password" type="password" autocomplete="current-password" required></label>
    <button type="submit">Log in</button>
  </form>
</section>
