// Fixture of the PM2-migration tests: a real-world style PM2 ecosystem file
// that the tests feed to `rtsup import ecosystem.config.js`.
// Start with PM2 as: pm2 start ecosystem.config.js --env production
module.exports = {
  apps: [
    {
      name: 'api',
      script: 'server.js',
      instances: 4,
      exec_mode: 'cluster',

      env: {
        NODE_ENV: 'development',
        GREETING: 'hello',
        PORT: process.env.PM2APP_PORT || 3000,
        WORKER_ID: 100,
      },
      env_production: {
        NODE_ENV: 'production',
        GREETING: 'hello from production',
      },
      // Each instance gets WORKER_ID = 100, 101, 102, 103.
      increment_var: 'WORKER_ID',

      // The app calls process.send('ready') once it is listening.
      wait_ready: true,
      listen_timeout: 8000,
      kill_timeout: 3000,

      autorestart: true,
      min_uptime: '2s',
      max_restarts: 10,
      restart_delay: 100,
      max_memory_restart: '300M',
      cron_restart: '0 3 * * *',

      watch: ['watched'],
      ignore_watch: ['node_modules', 'watched/ignored'],
      watch_delay: 500,

      out_file: './logs/out.log',
      error_file: './logs/err.log',
      merge_logs: true,
      log_date_format: 'YYYY-MM-DD HH:mm Z',
      time: true,
    },
  ],
};
