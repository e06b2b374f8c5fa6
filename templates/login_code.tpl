% rebase('base.tpl', title=title, session=None)
<section class="login card">
  <h1>Two-factor code</h1>
  % if message:
  <p class="error" role="alert">{{message}}</p>
  % end
  <form method="post" action="/login/code">
    <input type="hidden" name="csrf_token" value="{{csrf_token}}">
    <label>Code from your authenticator app <input name="code" inputmode="numeric" autocomplete="one-time-code" required autofocus maxlength="64"></label>
    <button type="submit">Log in</button>
  </form>
  <p class="muted">Or type one of your recovery codes. This step stays open {{minutes}} minutes; after that, <a href="/login">log in</a> with your password again.</p>
</section>
