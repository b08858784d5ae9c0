<?php
// Sends one notification to a user, as a backend job would (a cron job, a queue worker, a form handler):
//   php notify.php USER "TEXT"
// It publishes {"text", "sent_at"} to notify/USER/inbox over the HTTP API; every page USER has open shows it.

declare(strict_types=1);
require __DIR__ . '/shardmq.php';

[$user, $text] = [$argv[1] ?? '', $argv[2] ?? ''];
if (!valid_user($user) || $text === '') {
    fwrite(STDERR, "usage: php notify.php USER TEXT   (USER: letters, digits, - and _)\n");
    exit(2);
}
try {
    $answer = ShardmqApi::fromEnvironment()->publish("notify/$user/inbox", ['text' => $text, 'sent_at' => date(DATE_ATOM)]);
} catch (RuntimeException $error) {
    fwrite(STDERR, $error->getMessage() . "\n");
    exit(1);
}
echo json_encode($answer), "\n";
