<?php
// The web backend, for PHP's built-in server:   php -S 127.0.0.1:8000 server.php
//   GET /                  the page (index.html)
//   GET /token?user=USER   a fresh subscribe-only token for USER, and where to connect
//   GET /mqtt.min.js       MQTT.js's browser bundle (the file MQTTJS names)
// Settings (besides shardmq.php's): SHARDMQ_WS, the broker's WebSocket URL as the browser reaches it (default
// ws://127.0.0.1:8083/mqtt); TOKEN_TTL_SECONDS (default 3600); MQTTJS, the path of mqtt.min.js.
//
// A real site takes the user from its own login session; this demo takes it from the query string.

declare(strict_types=1);
require __DIR__ . '/shardmq.php';

function answer(int $status, string $type, string $body): bool
{
    http_response_code($status);
    header("Content-Type: $type");
    header('Cache-Control: no-store');
    echo $body;
    return true;
}

$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
if ($path === '/' || $path === '/index.html') {
    return answer(200, 'text/html; charset=utf-8', file_get_contents(__DIR__ . '/index.html'));
}
if ($path === '/mqtt.min.js') {
    $bundle = getenv('MQTTJS') ?: __DIR__ . '/../../tests/browser/node_modules/mqtt/dist/mqtt.min.js';
    if (!is_file($bundle)) {
        return answer(404, 'text/plain', "no MQTT.js bundle at $bundle: set MQTTJS\n");
    }
    return answer(200, 'text/javascript', file_get_contents($bundle));
}
if ($path === '/token') {
    $user = (string)($_GET['user'] ?? '');
    if (!valid_user($user)) {
        return answer(400, 'application/json', json_encode(['error' => 'user: letters, digits, - and _ only']));
    }
    try {
        $token = ShardmqApi::fromEnvironment()->subscribeToken($user, (int)(getenv('TOKEN_TTL_SECONDS') ?: 3600));
    } catch (RuntimeException $error) {
        error_log($error->getMessage());
        return answer(502, 'application/json', json_encode(['error' => 'the broker did not make a token']));
    }
    return answer(200, 'application/json', json_encode([
        'token' => $token['token'],
        'id' => $token['id'], // what DELETE /api/v1/tokens/{id} revokes (on log-out, say)
        'expires_at' => $token['expires_at'],
        'topic' => "notify/$user/#",
        'broker' => getenv('SHARDMQ_WS') ?: 'ws://127.0.0.1:8083/mqtt',
    ], JSON_UNESCAPED_SLASHES));
}
return answer(404, 'text/plain', "not found\n");
