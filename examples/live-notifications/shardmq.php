<?php
// The little shardmq HTTP API client this example needs: make a token, publish a message. Settings come
// from the environment so the same files run by hand and under the tests:
//   SHARDMQ_API          the broker's [http] listener      (default http://127.0.0.1:8080)
//   SHARDMQ_ADMIN_TOKEN  its admin_token                   (required)

declare(strict_types=1);

final class ShardmqApi
{
    public function __construct(private string $base, private string $adminToken)
    {
    }

    public static function fromEnvironment(): self
    {
        $token = getenv('SHARDMQ_ADMIN_TOKEN');
        if ($token === false || $token === '') {
            throw new RuntimeException('set SHARDMQ_ADMIN_TOKEN to the broker\'s [http] admin_token');
        }
        return new self(rtrim(getenv('SHARDMQ_API') ?: 'http://127.0.0.1:8080', '/'), $token);
    }

    /** A token that may only subscribe under notify/{user}/ for $ttlSeconds: ['token' => ..., 'expires_at' => ...]. */
    public function subscribeToken(string $user, int $ttlSeconds): array
    {
        return $this->post('/api/v1/tokens', [
            'acl' => [['filter' => "notify/$user/#", 'actions' => ['subscribe']]],
            'ttl_seconds' => $ttlSeconds,
            'info' => "live notifications for $user",
        ]);
    }

    /** Publishes $message (QoS 1) and returns the broker's answer (`matched`: whether anyone subscribed). */
    public function publish(string $topic, array $message): array
    {
        return $this->post('/api/v1/publish', [
            'topic' => $topic,
            'payload' => json_encode($message, JSON_THROW_ON_ERROR | JSON_UNESCAPED_UNICODE),
            'qos' => 1,
            'content_type' => 'application/json',
        ]);
    }

    private function post(string $path, array $body): array
    {
        $curl = curl_init($this->base . $path);
        curl_setopt_array($curl, [
            CURLOPT_POST => true,
            CURLOPT_POSTFIELDS => json_encode($body, JSON_THROW_ON_ERROR),
            CURLOPT_HTTPHEADER => ["Authorization: Bearer {$this->adminToken}", 'Content-Type: application/json'],
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_TIMEOUT => 10,
        ]);
        $text = curl_exec($curl);
        $status = curl_getinfo($curl, CURLINFO_RESPONSE_CODE);
        $error = curl_error($curl);
        curl_close($curl);
        if ($text === false) {
            throw new RuntimeException("shardmq $path: $error");
        }
        $answer = json_decode($text, true);
        if ($status < 200 || $status > 299 || !is_array($answer)) {
            throw new RuntimeException("shardmq $path: HTTP $status $text");
        }
        return $answer;
    }
}

/** A user name is part of a topic: letters, digits, '-' and '_' only, so it can hold no '+', '#' or '/'. */
function valid_user(string $user): bool
{
    return preg_match('/^[A-Za-z0-9_-]{1,64}$/', $user) === 1;
}
