<section id="summary" class="summary" data-v="{{version}}">
  <a href="/servers"><strong>{{'{:,}'.format(total)}}</strong> servers</a>
  <a class="online" href="/servers?status=online"><strong>{{'{:,}'.format(counts['online'])}}</strong> online</a>
  <a class="offline{{' alarm' if counts['offline'] else ''}}" href="/servers?status=offline"><strong>{{'{:,}'.format(counts['offline'])}}</strong> offline</a>
  <a class="never" href="/servers?status=never+seen"><strong>{{'{:,}'.format(counts['never seen'])}}</strong> never seen</a>
  <a class="firing{{' alarm' if firing else ''}}" href="/alerts"><strong>{{'{:,}'.format(firing)}}</strong> alerts firing</a>
</section>
