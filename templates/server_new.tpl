% rebase('base.tpl', title=title, session=session)
<section class="card narrow">
  <h1>Add server</h1>
  % if error:
  <p class="error" role="alert">{{error}}</p>
  % end
  <form method="post" action="/servers" class="stack">
    <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
    <label>Name <input name="name" value="{{name}}" maxlength="100" required autofocus placeholder="web-1"></label>
    % if customers:
    <label>Customer <select name="customer_id">
      <option value="">none: staff only</option>
      % for c in customers:
      <option value="{{c.id}}" {{'selected' if c.id == customer_id else ''}}>{{c.name}}</option>
      % end
    </select></label>
    % end
    <label class="check"><input type="checkbox" name="critical" value="1" {{'checked' if critical else ''}}> Critical: alert when it goes offline</label>
    <button type="submit">Add server</button>
  </form>
</section>
