% rebase('base.tpl', title=title, session=None, favicon='favicon-alert.svg' if down else 'favicon.svg')
<section class="card status-page">
  % if heading:
  <p class="status-heading">{{heading}}</p>
  % end
  % include('_status_rows.tpl', oob=False)
</section>
