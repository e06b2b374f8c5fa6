<section id="summary" class="summary" data-v="{{version}}">
  <a href="/servers"><strong>{{total}}</strong> servers</a>
  <a class="online" href="/servers?status=online"><strong>{{counts['online']}}</strong> online</a>
  <a class="offline{{' alarm' if counts['offline'] else ''}}" href="/servers?status=offline"><strong>{{counts['offline']}}</strong> offline</a>
  <a class="never" href="/servers?status=never+seen"><strong>{{counts['never seen']}}</strong> never seen</a>
  <a class="firing{{' alarm' if firing else ''}}" href="/alerts"><strong>{{firing}}</strong> alerts firing</a>
</section>
