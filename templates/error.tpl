% rebase('base.tpl', title=title, session=None)
<section class="card narrow">
  <h1>{{status}}</h1>
  <p>{{reason}}</p>
  <p><a href="/servers">Back to the servers</a></p>
</section>
